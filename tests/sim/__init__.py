"""A stand-in for a Vitastor cluster without OSDs: image data in sparse files, metadata in etcd."""
