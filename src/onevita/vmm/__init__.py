"""VMM (kvm) local-action overrides: the libvirt side of Vitastor disks."""
