"""Train, evaluate and publish the deepfake detector (see training/train.py for the commands)."""
