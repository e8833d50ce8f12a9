"""Storage mounts: NAS (NFS on Kubernetes, a host folder on one machine) and OSS (S3-compatible
object storage: a CSI volume on Kubernetes, an s3fs FUSE mount on one machine).

* ``paths``        mount-path rules (pure; used by the catalogue schema and the spawn options)
* ``mounts``       ``mounts`` spawn option + catalogue entries -> spec Mounts (pure)
* ``credentials``  credential references -> keys (one machine), OSS access check with boto3
* ``local``        the one-machine side effects: credential files, s3fs mounts, unmount, sweep
"""
