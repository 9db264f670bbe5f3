"""Helpers of the command lines that belong to no part of the model or the data (``env``)."""
