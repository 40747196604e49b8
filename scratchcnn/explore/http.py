"""``scratchcnn explore``'s web server: the routes, the HTTP handler, ``serve``.

The server is the standard library's ``http.server.ThreadingHTTPServer``: no
dependency, nothing to configure, and enough for one learner on localhost. The
page (``static/``: index.html, style.css and the ES modules of ``static/js/``,
:data:`JS_MODULES`, one per view) is plain HTML, CSS and JavaScript, with no CDN
and no build step; it draws every map on a <canvas>.

The routes (:data:`ROUTES`), each answered by one method of
``scratchcnn.explore.analysis.Explorer``:

    GET  /api/info                       classes, layers and their shapes, the dataset, the run
    GET  /api/images?cls=&wrong=&sort=&offset=&limit=&backend=
                                         a page of the test set: thumbnails, label, prediction
    POST /api/upload   (the image file as the body, Content-Type image/* or
                       application/octet-stream)     -> {"image": "upload:N"}
    GET  /api/confusion?backend=         the test split's confusion matrix
    POST /api/analyze  {image, backend, class}       logits, probabilities, saliency, Grad-CAM
    POST /api/layer    {image, backend, class, layer, mode: "forward" | "gradient" | "weight"}
                                         every channel of one layer's output, ds/d(output),
                                         or ds/d(a Conv2d's weight)
    POST /api/pixel    {image, backend, class, layer, mode, index}
                                         one number of that view written out: how the layer
                                         computed it (forward), or how the layer above sent
                                         it back, with scratch, torch and a finite difference
    GET  /api/filters?snapshot=          every Conv2d layer's weights
    GET  /api/run                        metrics.json of the run folder (curves, layer statistics)
    GET  /api/snapshots                  the weights train --snapshots K kept, in training order
    POST /api/dream    {backend, seed, steps, class | layer + channel}
                                         the image gradient ascent dreams up, and the 9 test
                                         images that score highest
    POST /api/fool     {image, backend, target, method, epsilon, max_steps, step_size}
                                         a fooling image, the change, probabilities before/after
    POST /api/occlusion {image, backend, class, patch, stride, fill}
                                         the probability drop when a patch covers each part

analyze, layer, pixel, filters, dream, fool and occlusion take "snapshot" (an index into
/api/snapshots; absent or null: the checkpoint's weights).

The JSON bodies are sent as Content-Type: application/json. HEAD answers like GET
without the body; any other method gets a 405 (404 where nothing is).

    dispatch(explorer, method, path, body)   one request -> (status, content type, bytes),
                                             without HTTP (the tests and ``--measure`` use it)
    make_server(explorer, host, port)        the server (ExploreServer: a ThreadingHTTPServer)
                                             and its Handler around ``dispatch``
    serve(explorer, host, port)              warm up, print the URL, serve until Ctrl-C

Safety: binds 127.0.0.1 unless ``--host`` says otherwise (with a warning); on
loopback it answers only requests whose Host header names loopback (no DNS
rebinding). A POST from a page of another site is refused (403: its Origin is not
the address it was sent to, or Sec-Fetch-Site says another site), and so is a body
of the wrong type (415), which is all a form or a no-cors fetch can send without
asking. Request bodies are limited (JSON 64 KiB and 32 levels deep, uploads 8 MiB;
the upload itself is checked by ``scratchcnn.explore.uploads``). A request must
arrive whole within READ_TIMEOUT seconds (408, or the connection is closed), and
REQUEST_QUEUE_SIZE connections may wait to be accepted. Every answer, errors
included, is JSON (or the page) with the same security headers. Bad requests get a
4xx and ``{"error": "..."}``; an unexpected failure gets a 500 with a one-line
message; a client that hangs up leaves no traceback; the server keeps serving.
"""
import io
import json
import os
import re
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import numpy as np

from scratchcnn.errors import UserError
from scratchcnn.explore.errors import ApiError
from scratchcnn.explore.uploads import MAX_UPLOAD_BYTES

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
# The page's ES modules (static/js/), one per view; index.html loads main.js, which imports the rest.
JS_MODULES = ("main.js", "store.js", "api.js", "util.js", "grid.js", "network.js", "summary.js", "maps.js",
              "formula.js", "filters.js", "run.js", "dreams.js", "timeline.js")
STATIC_FILES = {"/": ("index.html", "text/html; charset=utf-8"),
                "/index.html": ("index.html", "text/html; charset=utf-8"),
                "/static/style.css": ("style.css", "text/css; charset=utf-8"),
                **{f"/static/js/{m}": (f"js/{m}", "text/javascript; charset=utf-8") for m in JS_MODULES}}
# path -> (method, the Explorer method answering it, what it is given: nothing, the
# query string, the uploaded image's bytes or the JSON body)
ROUTES = {"/api/info": ("GET", "info", None),
          "/api/images": ("GET", "images", "query"),
          "/api/filters": ("GET", "filters", "query"),
          "/api/snapshots": ("GET", "snapshots", None),
          "/api/confusion": ("GET", "confusion", "query"),
          "/api/run": ("GET", "run", None),
          "/api/upload": ("POST", "upload", "image"),
          "/api/analyze": ("POST", "analyze", "json"),
          "/api/layer": ("POST", "layer", "json"),
          "/api/pixel": ("POST", "pixel", "json"),
          "/api/dream": ("POST", "dream", "json"),
          "/api/fool": ("POST", "fool", "json"),
          "/api/occlusion": ("POST", "occlusion", "json")}
MAX_JSON_BYTES = 64 * 1024
MAX_JSON_DEPTH = 32                      # our requests are flat objects; json.loads recurses
READ_TIMEOUT = 15.0                      # s for a request to arrive whole, or a connection to idle
REQUEST_QUEUE_SIZE = 128                 # connections waiting to be accepted (the standard library: 5)
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


def dispatch(explorer, method, path, body=b""):
    """One request to ``explorer`` -> (status, content type, body bytes). Never raises.
    HEAD is answered as GET (the HTTP handler leaves the body out)."""
    url = urlsplit(path)
    try:
        if url.path in STATIC_FILES:
            if method not in ("GET", "HEAD"):
                raise ApiError(405, f"{method} is not allowed on {url.path}")
            name, ctype = STATIC_FILES[url.path]
            with open(os.path.join(STATIC_DIR, name), "rb") as f:
                return 200, ctype, f.read()
        if url.path not in ROUTES:
            raise ApiError(404, f"nothing at {url.path}")
        allowed, name, takes = ROUTES[url.path]
        if ("GET" if method == "HEAD" else method) != allowed:
            raise ApiError(405, f"{method} is not allowed on {url.path}")
        answer = getattr(explorer, name)
        if takes is None:
            return _json(200, answer())
        if takes == "query":
            return _json(200, answer({k: v[-1] for k, v in parse_qs(url.query).items()}))
        if takes == "image":
            return _json(200, answer(body))
        try:
            text = body.decode("utf-8")
            if _too_deep(text, MAX_JSON_DEPTH):
                raise ApiError(400, f"the request body's JSON is nested deeper than {MAX_JSON_DEPTH} levels")
            req = json.loads(text)
        except (UnicodeDecodeError, ValueError) as e:
            raise ApiError(400, f"the request body is not valid JSON ({e})") from None
        return _json(200, answer(req))
    except ApiError as e:
        return _json(e.status, {"error": str(e)})
    except Exception as e:                      # a bug: say so in one line, keep serving
        first = (str(e).strip().splitlines() or [""])[0][:200]
        print(f"explore: internal error on {method} {url.path}: {type(e).__name__}: {first}", flush=True)
        return _json(500, {"error": f"internal error ({type(e).__name__}: {first})"})


_JSON_SPECIAL = re.compile(r'[\\"\[\]{}]')


def _too_deep(text, limit):
    """Do the arrays and objects of JSON ``text`` nest deeper than ``limit``? (Brackets inside
    strings do not count.) Asked before json.loads, which recurses once per level: 20,000
    nested lists fit in 64 KiB and would end in a RecursionError. Linear: one look at each
    special character, and it stops at the first level too deep."""
    depth = 0
    in_string, escaped_until = False, -1
    for m in _JSON_SPECIAL.finditer(text):
        i, c = m.start(), m.group()
        if i <= escaped_until:                     # the character after a backslash
            continue
        if in_string:
            if c == "\\":
                escaped_until = i + 1
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "[{":
            depth += 1
            if depth > limit:
                return True
        elif c in "]}":
            depth -= 1
    return False


def allowed_methods(path):
    """The methods ``path`` answers, for a 405's Allow header ("" where nothing is)."""
    path = urlsplit(path).path
    method = "GET" if path in STATIC_FILES else ROUTES.get(path, ("",))[0]
    return "GET, HEAD" if method == "GET" else method


def _json(status, obj):
    return status, "application/json", json.dumps(obj, allow_nan=False, default=_json_default).encode()


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


# ---------------------------------------------------------------- HTTP
class _RequestReader(io.RawIOBase):
    """A connection's reads, each given the time left to its request.

    A connection may wait ``timeout`` seconds for its next request to begin; then it is
    closed quietly (an end of file, as if the client had hung up: a browser's idle
    keep-alive connection). Once a request's first byte is in, the whole request (request
    line, headers, body) must arrive within ``timeout`` seconds: a client that announces
    more body than it sends, or trickles its headers one by one (slow loris), gets a
    TimeoutError instead of holding a server thread forever. A per-read timeout alone
    would not stop a header sent every few seconds."""

    def __init__(self, sock, timeout):
        self.sock, self.timeout, self.deadline = sock, timeout, None

    def readable(self):
        return True

    def next_request(self):
        self.deadline = None

    def readinto(self, buffer):
        if self.deadline is None:                       # waiting for a request to begin
            self.sock.settimeout(self.timeout)
            try:
                n = self.sock.recv_into(buffer)
            except TimeoutError:
                return 0
            self.deadline = time.monotonic() + self.timeout
            return n
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"the request did not arrive within {self.timeout:g} s")
        self.sock.settimeout(left)
        return self.sock.recv_into(buffer)


class Handler(BaseHTTPRequestHandler):
    """Thin HTTP layer over ``dispatch(server.explorer, ...)``: limits, headers, logging."""
    server_version = "scratchcnn-explore"
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        self.rfile.close()                              # read through the deadline instead
        self.rfile = io.BufferedReader(_RequestReader(self.connection, self.server.read_timeout))

    def handle_one_request(self):
        self.rfile.raw.next_request()
        super().handle_one_request()                    # a TimeoutError there closes the connection

    def do_GET(self):
        self._serve()

    def do_HEAD(self):
        self._serve()

    def do_POST(self):
        self._serve()

    def __getattr__(self, name):
        """Every other method (PUT, DELETE, OPTIONS, anything a client sends) is served too:
        http.server would answer its own HTML 501 page, without our headers; ``dispatch``
        answers a JSON 405 (404 where nothing is)."""
        if name.startswith("do_"):
            return self._serve
        raise AttributeError(name)

    def send_error(self, code, message=None, explain=None):
        """What http.server refuses itself (a malformed request line, version or header) in
        our JSON, with our headers, instead of its HTML page."""
        short = self.responses.get(code, ("error",))[0]
        if self.request_version == "HTTP/0.9":          # the line was unreadable: not a real 0.9
            self.request_version = "HTTP/1.1"           # client, so send the status and headers
        self._send(*_json(code, {"error": (message or short)[:200]}), close=True)

    def _serve(self):
        method = self.command
        # a body that is not read (any method but POST) would be taken for the next request
        unread = method != "POST" and (self.headers.get("Content-Length", "0").strip() != "0"
                                       or "Transfer-Encoding" in self.headers)
        close = unread or method not in ("GET", "HEAD", "POST")
        try:
            if self.server.loopback_only and not _loopback_host(self.headers.get("Host", "")):
                raise ApiError(403, "this server answers requests to 127.0.0.1 or localhost only")
            body = self._read_body() if method == "POST" else b""
        except ApiError as e:                           # refused before the body was read (or whole)
            return self._send(*_json(e.status, {"error": str(e)}), close=True)
        t = time.perf_counter()
        status, ctype, data = dispatch(self.server.explorer, method, self.path, body)
        self._send(status, ctype, data, close=close, ms=1000 * (time.perf_counter() - t))

    def _read_body(self):
        """A POST's body, read after every check that needs none of it; ApiError if refused."""
        cross = self._from_another_site()
        if cross:
            raise ApiError(403, f"this server accepts POSTs from its own page only (this one: {cross})")
        takes = ROUTES.get(urlsplit(self.path).path, (None, None, None))[2]
        limit = MAX_UPLOAD_BYTES if takes == "image" else MAX_JSON_BYTES
        if self.headers.get("Transfer-Encoding"):
            raise ApiError(411, "send the body with a Content-Length")
        try:
            n = int(self.headers.get("Content-Length"))
        except (TypeError, ValueError):
            raise ApiError(411, "a POST needs a Content-Length header") from None
        if n < 0 or n > limit:
            raise ApiError(413, f"the request body is {n:,} bytes; the limit here is {limit:,} bytes")
        # Only what a page of another site cannot send without asking first (a CORS preflight,
        # which gets a 405): a form or a no-cors fetch sends text/plain, form data or nothing.
        ctype = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if takes == "json" and ctype != "application/json":
            raise ApiError(415, f"send the JSON body as Content-Type: application/json, not {ctype or 'none'!r}")
        if takes == "image" and not (ctype.startswith("image/") or ctype == "application/octet-stream"):
            raise ApiError(415, f"send the file with an image Content-Type (image/png, image/jpeg, ...) or "
                                f"application/octet-stream, not {ctype or 'none'!r}")
        try:
            body = self.rfile.read(n)
        except TimeoutError:
            raise ApiError(408, f"the request body did not arrive within {self.server.read_timeout:g} s") from None
        if len(body) < n:
            raise ApiError(400, f"the request body ended after {len(body):,} of the {n:,} bytes announced")
        return body

    def _from_another_site(self):
        """Why this POST comes from a page of another site (for the 403), or None: from our own
        page, or from a tool that sends no Origin. Browsers send Sec-Fetch-Site (anything but
        same-origin, or none for the user's own action, is another site, even another port of
        localhost) and Origin, which must be the address the request was sent to, as its Host
        header names it (the Host check above keeps that to loopback unless --host says otherwise)."""
        site = self.headers.get("Sec-Fetch-Site")
        if site not in (None, "same-origin", "none"):
            return f"Sec-Fetch-Site: {site[:40]!r}"
        origin = self.headers.get("Origin")
        if origin is not None and not _same_origin(origin, self.headers.get("Host", "")):
            return f"Origin {origin[:100]!r}"
        return None

    def _send(self, status, ctype, data, close=False, ms=None):
        self.connection.settimeout(self.server.read_timeout)    # a client that stops reading
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy",
                         "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
                         "script-src 'self'; connect-src 'self'")
        if ms is not None:
            self.send_header("Server-Timing", f"compute;dur={ms:.1f}")
        if status == 405:
            self.send_header("Allow", allowed_methods(getattr(self, "path", "")))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_message(self, fmt, *args):
        if self.server.verbose:
            super().log_message(fmt, *args)


class ExploreServer(ThreadingHTTPServer):
    """The standard library's threading server, one thread per connection, with room for
    REQUEST_QUEUE_SIZE connections waiting to be accepted: with its 5, the 6th of a burst
    of connections had its handshake dropped and retried after 1, 3, 7 s..."""
    request_queue_size = REQUEST_QUEUE_SIZE
    daemon_threads = True

    def handle_error(self, request, client_address):
        """A client that hung up (a reload, a closed tab) while we read its request or wrote
        the answer is nothing to report; anything else is a bug: the standard traceback."""
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


def _same_origin(origin, host):
    """Does ``origin`` (an Origin header) name the server as ``host`` (the Host header) does?"""
    try:
        o, h = urlsplit(origin), urlsplit("//" + host)
        return (o.scheme == "http" and o.hostname is not None and o.path == ""
                and (o.hostname, o.port or 80) == (h.hostname, h.port or 80))
    except ValueError:                                  # a port that is not a number
        return False


def _loopback_host(host):
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    return name in LOOPBACK


def make_server(explorer, host="127.0.0.1", port=8000, verbose=False, read_timeout=None):
    """A ThreadingHTTPServer answering with ``explorer`` (port 0: any free port); each request
    must arrive within ``read_timeout`` seconds (default READ_TIMEOUT)."""
    try:
        server = ExploreServer((host, port), Handler)
    except OSError as e:
        raise UserError(f"cannot listen on {host}:{port} ({e.strerror or e}); pick another --port "
                        f"(or 0 for any free one)") from None
    server.explorer, server.verbose = explorer, verbose
    server.read_timeout = READ_TIMEOUT if read_timeout is None else read_timeout
    server.loopback_only = host in LOOPBACK
    return server


def serve(explorer, host="127.0.0.1", port=8000):
    """Warm up, print the URL and serve ``explorer`` until Ctrl-C. Returns the exit code."""
    if not 0 <= port <= 65535:
        raise UserError(f"--port {port} is out of range 0..65535")
    server = make_server(explorer, host, port, verbose=True)
    if host not in LOOPBACK:
        print(f"WARNING: listening on {host}: anyone who can reach this machine on port "
              f"{server.server_address[1]} can use the page and upload images to it.", flush=True)
    print(f"loading: both backends' predictions for the {len(explorer.data)} {explorer.data.name} "
          f"test images ...", flush=True)
    explorer.warm()
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    print(f"scratchcnn explore: http://{shown}:{server.server_address[1]}/  (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped", flush=True)
    finally:
        server.server_close()
    return 0
