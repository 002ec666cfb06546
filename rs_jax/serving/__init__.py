"""Archive search as a service: `service.Service` (indexes, encoders,
thumbnails), `searcher.Searcher` (warm, coalesced batched search),
`app.create_app` (Starlette HTTP API + page.html); run it with
`python -m rs_jax.serve` or the launch task `serving.task`."""
