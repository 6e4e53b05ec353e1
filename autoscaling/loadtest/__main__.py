"""`python -m autoscaling.loadtest run|sweep|report ...`"""
import sys

from autoscaling.loadtest.cli import main

sys.exit(main())
