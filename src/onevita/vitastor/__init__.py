"""The Vitastor side: configuration, etcd, the image catalog and the cluster jobs."""
