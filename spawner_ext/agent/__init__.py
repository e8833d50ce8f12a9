"""The image agent: saves a running instance as an image by pushing only the instance's own
writable layer on top of its base image. Runs beside the container runtime (a DaemonSet on
Kubernetes, beside the hub on one machine); see README "Save an instance as an image".

- ``locate``: container id -> init process -> overlay upperdir and mount points (/proc only)
- ``layer``: upperdir -> one OCI layer (tar+gzip), pure file-system reading
- ``publish``: base manifest + config + layer -> registry (python-dxf), tag last
- ``app``: the HTTP glue (FastAPI), token auth, one save per container at a time
"""
