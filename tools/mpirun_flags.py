"""The mpirun flags of tools/mpirun.flags (the one place they are written) for Python scripts."""
import os

PATH = os.path.join(os.path.dirname(os.path.realpath(__file__)), "mpirun.flags")


def mpirun_flags():
    """The flags as a list of arguments, comment lines left out."""
    with open(PATH, encoding="utf-8") as f:
        return [word for line in f if not line.lstrip().startswith("#") for word in line.split()]


def mpirun(*args):
    """["mpirun", <flags>, *args]."""
    return ["mpirun", *mpirun_flags(), *args]
