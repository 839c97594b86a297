/* Constants shared by entry.S and the C runtime. */
#ifndef KINDLING_GUEST_LAYOUT_H_
#define KINDLING_GUEST_LAYOUT_H_

/* The identity map covers 0 .. MAX_MAPPED_GIB GiB at most: 4 GiB always
 * (MMIO and the APIC included), RAM above 4 GiB as the memmap reports it. */
#define MAX_MAPPED_GIB 64

#endif
