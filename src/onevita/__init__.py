"""onevita: the OpenNebula storage driver suite for Vitastor."""

__version__ = "0.1.0"
