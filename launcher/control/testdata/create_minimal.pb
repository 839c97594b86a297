

/boot/vmlinuz (€@px€vm-1