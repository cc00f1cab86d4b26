"""Datastore actions (``remotes/datastore/vitastor/*``): oned sends the IMAGE and DATASTORE
documents base64-encoded on stdin."""
