"""`python -m launch.dead_letters`: the dead-letter console (launch/tools/dead_letters.py)."""
import sys

from launch.tools.dead_letters import main

if __name__ == '__main__':
    sys.exit(main())
