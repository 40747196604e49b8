"""``scratchcnn explore``: a local web page for looking inside the network.

    analysis.Explorer(checkpoint, data)   answers every request kind, without HTTP
    uploads.decode_upload(data)           an uploaded image's bytes -> uint8 (3, 32, 32), safely
    errors.ApiError                       a bad request and its HTTP status
    http.dispatch / make_server / serve   the routes, and the standard library's
                                          ThreadingHTTPServer around them
    measure.measure(explorer)             time each kind of request, server-side
    commands.register(subparsers)         the ``explore`` subcommand (scratchcnn.cli adds it)
    static/                               index.html, app.js, style.css: plain, offline, no build

This package imports nothing itself, so the CLI's parser stays fast.
"""
