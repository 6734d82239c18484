import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))  # tests/models.py and other shared test helpers
torch.set_num_threads(1)
