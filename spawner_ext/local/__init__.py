"""The local backend: instances as containers through the Docker Engine API."""
