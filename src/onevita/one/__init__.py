"""The OpenNebula side: argv conventions, XML-RPC to oned, and typed views of its XML."""
