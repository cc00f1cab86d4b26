"""vmm/kvm local actions."""
