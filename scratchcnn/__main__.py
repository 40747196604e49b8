"""``python -m scratchcnn`` is the same as the ``scratchcnn`` command."""
import sys

from scratchcnn.cli import main

sys.exit(main())
