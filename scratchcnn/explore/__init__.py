"""``scratchcnn explore``: a local web page for looking inside the network.

    analysis.Explorer(checkpoint, data)   answers every request kind, without HTTP, for the
                                          network the checkpoint holds
    formulas                              one number of any layer written out: forward (how
                                          the layer computed it) and backward (how the layer
                                          above sent its gradient back), per kind
    finite.Float64Network                 a float64 copy of the network: central differences
                                          of the class score, the third opinion on a gradient
    uploads.decode_upload(data)           an uploaded image's bytes -> uint8 (3, 32, 32), safely
    errors.ApiError                       a bad request and its HTTP status
    http.dispatch / make_server / serve   the routes, and the standard library's
                                          ThreadingHTTPServer around them
    measure.measure(explorer)             time each kind of request, server-side
    commands.register(subparsers)         the ``explore`` subcommand (scratchcnn.cli adds it)
    static/                               index.html, style.css and js/ (ES modules, one per
                                          view: grid, network, summary, maps, formula, filters,
                                          run; store.js the one state store): plain, offline,
                                          no build

This package imports nothing itself, so the CLI's parser stays fast.
"""
