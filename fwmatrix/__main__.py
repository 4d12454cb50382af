"""`python -m fwmatrix ...`: the `fwmatrix` command, under its own name."""

from fwmatrix.cli import main

if __name__ == "__main__":
    main(prog_name="fwmatrix")
