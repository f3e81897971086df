"""Foundations every other layer may use: the error family, atomic file IO, shared type aliases,
validators and the generic config (de)serializer. Imports nothing from haq and no torch, so the
torch-free device side can use it too."""
