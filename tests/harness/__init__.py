"""Test infrastructure: real etcd and sshd daemons, an oned XML-RPC stand-in, OpenNebula XML builders."""
