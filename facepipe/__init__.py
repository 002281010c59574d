"""Shared code of the face-recognition pipeline: settings, clients, key naming, result format."""
