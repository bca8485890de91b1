"""Multi-head attention, a drop-in for `keras.layers.MultiHeadAttention`.

We use the notation B batch, T query length, S key/value length, D model
width of the inputs, H heads, K key size per head, V value size per head.
"""

import math

import keras
from keras import ops

from tf_transformer import masks
from tf_transformer.layers.dropout import Dropout
from tf_transformer.layers.scaled_dot_product_attention import masked_softmax
from tf_transformer.checks import check_positive_int, check_rate
from tf_transformer.fast_paths import weights_matmul, write_at_index


@keras.saving.register_keras_serializable(package="tf_transformer")
class MultiHeadAttention(keras.layers.Layer):
    """Multi-head scaled dot-product attention (the paper's section 3.2.2).

    `MultiHead(Q, K, V) = Concat(head_1, …, head_H) W^O` with
    `head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V)`: each head attends in its
    own learned subspace of size `key_dim`, and the heads run in parallel as
    one batched product. The paper uses `key_dim = d_model // num_heads`, which keeps
    the cost of all heads together equal to that of one full-width head;
    the encoder and decoder blocks of this package do the same.

    This is our own implementation, written with `keras.ops` only so it runs
    on every Keras backend, and a drop-in for `keras.layers.MultiHeadAttention`
    on `[B, T, D]` inputs (no `attention_axes`, LoRA or quantisation): the
    same constructor and call arguments, the same mask semantics and the same
    weight layout, so `layer.set_weights(keras_mha.get_weights())` gives the
    same outputs. Where it differs from Keras's layer:

    * inputs must be `[B, T, D]` (no `attention_axes`), and there is no
      LoRA, quantisation or `_build_from_signature`;
    * the softmax is taken in float32 under mixed precision;
    * scores are `[B, H, T, S]` from the symbolic call too when `T != S`;
    * a key/value cache (`cache`, `cache_update_index`) for decoding;
    * `flash_attention` per layer (Keras: only the global switch);
    * padded query rows: exactly zero output on the einsum path (scores
      asked for, attention dropout, cached steps), the backend's value for a
      fully masked row on the fused path.

    It also carries the key/value cache used for incremental decoding (the
    `cache` and `cache_update_index` arguments, named as KerasHub's; our
    cache is heads-first, `[B, H, L, K]`).

    Args:
        num_heads: H, the number of attention heads.
        key_dim: K, the size of each head for query and key.
        value_dim: V, the size of each head for value (defaults to `key_dim`).
        dropout: dropout rate on the attention weights.
        use_bias: whether the projections have biases.
        output_shape: the size of the output's last axis, an int or a tuple
            (defaults to the query's last dimension).
        kernel_initializer, bias_initializer, kernel_regularizer,
        bias_regularizer, kernel_constraint, bias_constraint: as for
            `keras.layers.Dense`, applied to every projection.
        seed: seed of the attention dropout.
        flash_attention: whether the fused path (no scores asked for, no
            attention dropout) may use the backend's flash kernel (cuDNN
            with JAX on a GPU): None (default) follows
            `keras.config.enable_flash_attention()` /
            `disable_flash_attention()` and otherwise lets the backend
            decide, as `keras.layers.MultiHeadAttention` does; False never
            uses it (XLA's attention instead); True requires it.
        **kwargs: base `Layer` arguments (`name`, `dtype`,
            `activity_regularizer`, …).

    Call arguments:
        query: `[B, T, D_q]`.
        value: `[B, S, D_v]`.
        key: `[B, S, D_k]`; defaults to `value`.
        query_mask: bool `[B, T]`, False on padded queries. Taken from the
            query's Keras mask when not given; the output carries that mask.
        value_mask: bool `[B, S]`, False on padded values (likewise implicit).
        key_mask: bool `[B, S]` for the key (likewise implicit).
        attention_mask: bool or 0/1, rank 2 `[T, S]`, 3 `[B, T, S]` or
            4 `[B, H, T, S]`; True = may attend. ANDed with the masks above.
        use_causal_mask: AND a lower-triangular mask (query t attends to
            keys <= t; with a cache, to keys <= `cache_update_index + t`).
        return_attention_scores: also return the attention weights
            `[B, H, T, S]`.
        training: whether dropout is active.
        cache: a `(key_cache, value_cache)` pair, `[B, H, L, K]` and
            `[B, H, L, V]` (heads before positions, so a decoding step reads
            it without copying it into another layout). With
            `cache_update_index=None` the cache holds the already projected
            keys and values (cross-attention: the encoder output projected
            once by `compute_cache`) and `key`/`value` are ignored. With an
            index, the projected `key`/`value` of the current step(s) are
            written into the cache at that position and the query attends
            over the whole cache.
        cache_update_index: int scalar, the position of the first query of
            this call in the cache.

    Returns:
        `output` `[B, T, output_shape]`; then the scores if asked for; then
        the updated `(key_cache, value_cache)` if a cache was given.

    Example:

    >>> mha = MultiHeadAttention(num_heads=2, key_dim=4)
    >>> x = keras.random.normal((3, 5, 8))
    >>> context = keras.random.normal((3, 7, 8))
    >>> out, scores = mha(x, context, return_attention_scores=True)
    >>> tuple(out.shape), tuple(scores.shape)
    ((3, 5, 8), (3, 2, 5, 7))
    """

    def __init__(
        self,
        num_heads,
        key_dim,
        value_dim=None,
        dropout=0.0,
        use_bias=True,
        output_shape=None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        seed=None,
        flash_attention=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = check_positive_int("num_heads", num_heads)
        self.key_dim = check_positive_int("key_dim", key_dim)
        self.value_dim = check_positive_int(
            "value_dim", key_dim if value_dim is None else value_dim
        )
        self.dropout = check_rate("dropout", dropout)
        self.use_bias = bool(use_bias)
        if output_shape is not None:
            dims = (output_shape,) if isinstance(output_shape, int) else output_shape
            output_shape = tuple(check_positive_int("output_shape", d) for d in dims)
        self._output_shape = output_shape
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        self.seed = seed
        if flash_attention not in (None, True, False):
            raise ValueError(f"`flash_attention` must be None, True or False. Received: flash_attention={flash_attention!r}")
        self.flash_attention = flash_attention
        self.supports_masking = True
        self._inverse_sqrt_key_dim = 1.0 / math.sqrt(float(self.key_dim))
        self.dropout_layer = Dropout(
            self.dropout, seed=seed, dtype=self.dtype_policy
        )

    @property
    def output_shape(self):
        return self._output_shape

    def build(self, query_shape, value_shape, key_shape=None):
        key_shape = value_shape if key_shape is None else key_shape
        for name, shape in (("query", query_shape), ("value", value_shape), ("key", key_shape)):
            if len(shape) != 3 or shape[-1] is None:
                raise ValueError(
                    f"`{name}` must have shape [batch, length, features] with "
                    f"known features. Received: {name}.shape={tuple(shape)}"
                )
        if value_shape[1] is not None and key_shape[1] is not None and value_shape[1] != key_shape[1]:
            raise ValueError(
                "`key` and `value` must have the same length. "
                f"Received: value.shape={tuple(value_shape)}, key.shape={tuple(key_shape)}"
            )
        heads, k, v = self.num_heads, self.key_dim, self.value_dim
        output_shape = self._output_shape or (query_shape[-1],)
        # The weights are created in keras.layers.MultiHeadAttention's order
        # and shapes, which is what makes `set_weights` interchangeable.
        self.query_kernel, self.query_bias = self._add_projection("query", (query_shape[-1], heads, k), (heads, k))
        self.key_kernel, self.key_bias = self._add_projection("key", (key_shape[-1], heads, k), (heads, k))
        self.value_kernel, self.value_bias = self._add_projection("value", (value_shape[-1], heads, v), (heads, v))
        self.output_kernel, self.output_bias = self._add_projection(
            "attention_output", (heads, v, *output_shape), output_shape
        )
        self.dropout_layer.build(None)

    def _add_projection(self, name, kernel_shape, bias_shape):
        # Fresh initializer instances per weight, so a seeded initializer does
        # not give every projection the same values (as Keras does).
        def clone(initializer):
            return initializer.__class__.from_config(initializer.get_config())

        kernel = self.add_weight(
            name=f"{name}_kernel",
            shape=kernel_shape,
            initializer=clone(self.kernel_initializer),
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        bias = None
        if self.use_bias:
            bias = self.add_weight(
                name=f"{name}_bias",
                shape=bias_shape,
                initializer=clone(self.bias_initializer),
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )
        return kernel, bias

    def _project(self, x, kernel, bias, training=None):
        # Casts make the direct calls of `compute_cache` (outside Keras's
        # autocast scope) compute in the layer's dtype too.
        # A tensordot, not the einsum "btd,dhk->bthk": on TensorFlow the
        # einsum is a broadcasting batch matmul, whose kernel gradient is B
        # small [T, D]ᵀ·[T, H·K] products and a sum over them; the tensordot
        # is one [B·T, D] matmul, whose kernel gradient is one product.
        x = weights_matmul(x, kernel, training, axes=1)  # [B, T, H, K]
        return x if bias is None else x + ops.cast(bias, x.dtype)

    def _project_key_value(self, value, key=None, training=None):
        """`(key [B, S, H, K], value [B, S, H, V])`, projected."""
        key = ops.cast(value if key is None else key, self.compute_dtype)
        value = ops.cast(value, self.compute_dtype)
        return (
            self._project(key, self.key_kernel, self.key_bias, training),
            self._project(value, self.value_kernel, self.value_bias, training),
        )

    def compute_cache(self, value, key=None):
        """Projects keys and values once: `(key [B, H, S, K], value [B, H, S, V])`.

        Used for cross-attention while decoding, where the encoder output
        does not change from one step to the next; in the cache's
        heads-first layout.
        """
        return tuple(_heads_first(x) for x in self._project_key_value(value, key))

    def call(
        self,
        query,
        value,
        key=None,
        query_mask=None,
        value_mask=None,
        key_mask=None,
        attention_mask=None,
        use_causal_mask=False,
        return_attention_scores=False,
        training=None,
        cache=None,
        cache_update_index=None,
    ):
        key = value if key is None else key
        value_mask = masks.both(value_mask, key_mask)  # Keras's rule: a position is a key only if both allow it

        query_projected = self._project(query, self.query_kernel, self.query_bias, training)  # [B, T, H, K]
        if cache is None:
            key_projected, value_projected = self._project_key_value(value, key, training)  # [B, S, H, K|V]
        elif cache_update_index is None:
            key_projected, value_projected = cache  # [B, H, S, K|V]
        else:
            step_key, step_value = self.compute_cache(value, key)  # [B, H, T, K|V]
            key_projected = write_at_index(cache[0], step_key, cache_update_index, axis=2)
            value_projected = write_at_index(cache[1], step_value, cache_update_index, axis=2)
            cache = (key_projected, value_projected)

        query_length = ops.shape(query_projected)[1]
        key_length = ops.shape(key_projected)[1 if cache is None else 2]
        mask = masks.merge_masks(
            query_length,
            key_length,
            query_mask=query_mask,
            key_mask=value_mask,
            attention_mask=attention_mask,
            use_causal_mask=use_causal_mask,
            causal_offset=0 if cache_update_index is None else cache_update_index,  # query t sits at index + t
        )
        output, scores = self._attend(
            query_projected, key_projected, value_projected,
            masks.expand_mask_for_heads(mask), training, return_attention_scores,
            decoding=cache is not None,
        )
        output = weights_matmul(output, self.output_kernel, training, axes=2)  # [B, T, *output_shape]
        if self.output_bias is not None:
            output = output + self.output_bias

        outputs = (output,)
        if return_attention_scores:
            outputs += (scores,)
        if cache is not None:
            outputs += (cache,)
        return outputs[0] if len(outputs) == 1 else outputs

    def _attend(self, query, key, value, mask, training, return_attention_scores, decoding=False):
        """query [B, T, H, K], mask [B, 1|H, T, S]; key [B, S, H, K] and value
        [B, S, H, V], or, from a cache (`decoding`), [B, H, S, K|V]."""
        dropout_active = self.dropout > 0.0 and bool(training)
        if not (decoding or return_attention_scores or dropout_active):
            # The backend's fused kernel (flash attention where available);
            # it also keeps the softmax in float32.
            if mask is not None:
                # cuDNN's flash kernel (JAX on GPU) takes a mask only at full
                # [*, *, T, S]; a broadcast [B, 1, 1, S] padding mask would
                # send it back to the unfused path.
                mask = ops.broadcast_to(
                    mask,
                    (ops.shape(mask)[0], ops.shape(mask)[1], ops.shape(query)[1], ops.shape(key)[1]),
                )
            # Read at trace time, so the global switch works on built layers too.
            flash = self.flash_attention
            if flash is None:
                flash = keras.config.is_flash_attention_enabled()
            output = ops.dot_product_attention(
                query, key, value, mask=mask, scale=self._inverse_sqrt_key_dim, flash_attention=flash
            )
            return output, None
        # Ours: when the scores are asked for, when they are dropped out, and
        # for a cached step. Its einsums read the heads-first cache in place;
        # `ops.dot_product_attention` wants [B, S, H, K] (XLA copied the whole
        # cache every step: 30 % of a decoding step) and, on TensorFlow, adds
        # masking ops that count in a step of a few hundred tiny ops.
        keys = "bhsk" if decoding else "bshk"
        query = query * ops.cast(self._inverse_sqrt_key_dim, query.dtype)
        scores = ops.einsum(f"bthk,{keys}->bhts", query, key)  # [B, H, T, S]
        weights = masked_softmax(scores, mask)
        dropped = self.dropout_layer(weights, training=training) if dropout_active else weights
        output = ops.einsum(f"bhts,{keys[:-1]}v->bthv", dropped, value)  # [B, T, H, V]
        return output, weights

    def compute_output_shape(self, query_shape, value_shape, key_shape=None):
        query_shape = tuple(query_shape)
        if self._output_shape is not None:
            return query_shape[:-1] + self._output_shape
        return query_shape

    def compute_output_spec(
        self,
        query,
        value,
        key=None,
        return_attention_scores=False,
        cache=None,
        **kwargs,
    ):
        output = keras.KerasTensor(
            self.compute_output_shape(query.shape, value.shape), dtype=self.compute_dtype
        )
        outputs = (output,)
        if return_attention_scores:
            key_length = cache[0].shape[2] if cache is not None else value.shape[1]
            outputs += (
                keras.KerasTensor(
                    (query.shape[0], self.num_heads, query.shape[1], key_length),
                    dtype=self.compute_dtype,
                ),
            )
        if cache is not None:
            outputs += (tuple(keras.KerasTensor(c.shape, dtype=c.dtype) for c in cache),)
        return outputs[0] if len(outputs) == 1 else outputs

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "key_dim": self.key_dim,
                "value_dim": self.value_dim,
                "dropout": self.dropout,
                "use_bias": self.use_bias,
                "output_shape": self._output_shape,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
                "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
                "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
                "bias_constraint": keras.constraints.serialize(self.bias_constraint),
                "seed": self.seed,
                "flash_attention": self.flash_attention,
            }
        )
        return config


def _heads_first(x):
    """[B, S, H, K] -> [B, H, S, K], the cache's layout."""
    return ops.transpose(x, (0, 2, 1, 3))
