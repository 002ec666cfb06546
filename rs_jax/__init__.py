"""rs_jax: content-based remote-sensing image retrieval by deep hashing."""
