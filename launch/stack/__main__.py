"""`python -m launch.stack up|down|status|logs`: the command line of launch/stack/stack.py."""
import sys

from launch.stack.stack import main

sys.exit(main())
