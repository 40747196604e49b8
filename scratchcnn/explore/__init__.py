"""``scratchcnn explore``: a local web page for looking inside the network.

    server.Explorer(checkpoint, data)   answers every request without HTTP (tests, --measure)
    server.make_server / serve          the standard library's ThreadingHTTPServer around it
    server.measure(explorer)            time each kind of request, server-side
    static/                             index.html, app.js, style.css: plain, offline, no build

This package imports nothing itself, so the CLI's parser stays fast.
"""
