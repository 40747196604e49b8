"""Files replaced atomically: a crash leaves the old file or the new one, never half of one.

Its own module so that checkpoints (``scratchcnn.checkpoint``), run files
(``scratchcnn.train``) and the image cache (``scratchcnn.folder``) share it
without importing each other.
"""
import os
import re
import tempfile


def atomic_write(path, write):
    """Call ``write(file_object)`` on a temporary file beside ``path``, then rename it over ``path``.

    A crash at any moment leaves either the old file or the new one, never half of one.
    The temporary file is ``NAME.XXXXXXXX.tmp`` (NAME = ``path``'s file name, 8 random
    characters from ``tempfile.mkstemp``); it is removed on any exception, and only a
    process killed outright (kill -9, power cut) can leave it behind, which
    ``remove_stale_temp_files`` cleans up on the next start.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=os.path.basename(path) + ".", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)          # mkstemp makes 0600; a plain open() would not
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def remove_stale_temp_files(folder, names):
    """Delete the temporary files ``atomic_write`` left in ``folder`` when a process died
    between writing one and renaming it: ``NAME.XXXXXXXX.tmp`` for each NAME in ``names``
    (nothing else is touched). Returns the paths removed."""
    if not os.path.isdir(folder):
        return []
    pattern = re.compile(r"(?:%s)\.[a-z0-9_]{8}\.tmp" % "|".join(re.escape(n) for n in names))
    removed = []
    for entry in sorted(os.listdir(folder)):
        path = os.path.join(folder, entry)
        if pattern.fullmatch(entry) and os.path.isfile(path):
            os.remove(path)
            removed.append(path)
    return removed
