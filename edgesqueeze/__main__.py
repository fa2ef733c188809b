"""``python -m edgesqueeze`` runs the command line."""
from .cli import run

run()
