"""Unit tests of the Vitastor side (catalog, etcd client) against a real etcd."""
