"""The DSW service: a hub-managed JupyterHub service at /services/dsw/ (REST API + pages)."""
