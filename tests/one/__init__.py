"""Unit tests of the OpenNebula side (XML-RPC client) against the oned stand-in."""
