"""Train, evaluate and publish the deepfake detector (see training/train.py for the commands)."""

# What training.train writes next to the weights (arguments, epoch, data counts); publish and average read it.
TRAINING_FILE = "training.json"
