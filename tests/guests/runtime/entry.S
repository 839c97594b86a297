/*
 * PVH entry, long-mode switch, interrupt stubs, ring-3 switch and the SMP
 * real-mode trampoline of the test-guest runtime.
 *
 * PVH entry state (Xen's PVH ABI, as QEMU and kindling provide it): 32-bit
 * protected mode, paging off, CS a flat 32-bit code segment, DS/ES/SS flat
 * data segments, %ebx = physical address of struct hvm_start_info. We load
 * our own GDT at once, so nothing else about the loader's GDT matters; we
 * need no particular value in any other register, in EFLAGS (we cli/cld)
 * or in CR4/EFER.
 */
#include "layout.h"

#define CODE32 0x08
#define DATA   0x10
#define CODE64 0x18
#define USER_DATA 0x20
#define USER_CODE64 0x28
#define TSS_SEL 0x30

#define PTE_P 0x1
#define PTE_W 0x2
#define PTE_U 0x4
#define PTE_PS 0x80

/* The PVH ELF note: XEN_ELFNOTE_PHYS32_ENTRY (18), name "Xen". */
	.section .note.pvh, "a", @note
	.balign 4
	.long 4
	.long 4
	.long 18
	.asciz "Xen"
	.balign 4
	.long pvh_start32
	.balign 4

	.section .text.entry, "ax"
	.code32
	.globl pvh_start32
pvh_start32:
	cli
	cld
	/* %ebx holds the start info; keep it untouched until C. */
	lgdt gdt_desc
	ljmp $CODE32, $1f
1:	mov $DATA, %eax
	mov %eax, %ds
	mov %eax, %es
	mov %eax, %ss
	mov %eax, %fs
	mov %eax, %gs
	mov $boot_stack_top, %esp

	/* PML4[0] -> PDPT; PDPT[0..3] -> pd_low; pd_low maps 0..4 GiB with
	 * 2 MiB pages, all present, writable and user-accessible. */
	movl $(pdpt + PTE_P + PTE_W + PTE_U), pml4
	movl $0, pml4 + 4
	xor %ecx, %ecx
2:	mov %ecx, %eax
	shl $12, %eax
	add $(pd_low + PTE_P + PTE_W + PTE_U), %eax
	mov %eax, pdpt(,%ecx,8)
	movl $0, pdpt + 4(,%ecx,8)
	inc %ecx
	cmp $4, %ecx
	jne 2b
	xor %ecx, %ecx
3:	mov %ecx, %eax
	shl $21, %eax
	or $(PTE_P + PTE_W + PTE_U + PTE_PS), %eax
	mov %eax, pd_low(,%ecx,8)
	mov %ecx, %eax
	shr $11, %eax            /* bits 32+ of entry i*2MiB = i >> 11 */
	mov %eax, pd_low + 4(,%ecx,8)
	inc %ecx
	cmp $2048, %ecx
	jne 3b
	/* The other PML4 and PDPT entries: zero (the pool pages for RAM above
	 * 4 GiB are filled in C before use). */
	mov $1, %ecx
4:	movl $0, pml4(,%ecx,8)
	movl $0, pml4 + 4(,%ecx,8)
	inc %ecx
	cmp $512, %ecx
	jne 4b
	mov $4, %ecx
5:	movl $0, pdpt(,%ecx,8)
	movl $0, pdpt + 4(,%ecx,8)
	inc %ecx
	cmp $512, %ecx
	jne 5b

	call enter_long_mode32
	ljmp $CODE64, $start64

/* CR4.PAE, CR3, EFER.LME, CR0.PG|PE. Shared by the BSP and the APs. */
enter_long_mode32:
	mov %cr4, %eax
	or $0x20, %eax
	mov %eax, %cr4
	mov $pml4, %eax
	mov %eax, %cr3
	mov $0xc0000080, %ecx
	rdmsr
	or $0x100, %eax
	wrmsr
	mov %cr0, %eax
	or $0x80000001, %eax
	mov %eax, %cr0
	ret

/* APs arrive here from the real-mode trampoline, flat 32-bit. */
	.globl ap_entry32
ap_entry32:
	mov $DATA, %eax
	mov %eax, %ds
	mov %eax, %es
	mov %eax, %ss
	mov %eax, %fs
	mov %eax, %gs
	mov $ap_boot_stack, %esp
	add $256, %esp
	call enter_long_mode32
	ljmp $CODE64, $ap_start64

	.code64
start64:
	xor %eax, %eax
	mov %eax, %fs
	mov %eax, %gs
	mov $boot_stack_top, %rsp
	/* Zero .bss (small: stacks and page tables live in .noinit). */
	mov $__bss_start, %rdi
	mov $__bss_end, %rcx
	sub %rdi, %rcx
	rep stosb
	mov %ebx, %edi
	call runtime_start
	mov %eax, %edi
	call exit_vm

ap_start64:
	xor %eax, %eax
	mov %eax, %fs
	mov %eax, %gs
	mov ap_stack_top(%rip), %rsp
	call ap_start
6:	cli
	hlt
	jmp 6b

/* ---- interrupts ---- */
	.balign 16
	.globl isr_stubs
isr_stubs:
	.set i, 0
	.rept 256                 /* 16 bytes each: isr_stubs + 16 * vector */
	.balign 16
	.if !(i == 8 || (i >= 10 && i <= 14) || i == 17 || i == 21 || i == 29 || i == 30)
	push $0                   /* no CPU error code: push a dummy one */
	.endif
	push $i
	jmp isr_common
	.set i, i + 1
	.endr

isr_common:
	push %rax
	push %rbx
	push %rcx
	push %rdx
	push %rsi
	push %rdi
	push %rbp
	push %r8
	push %r9
	push %r10
	push %r11
	push %r12
	push %r13
	push %r14
	push %r15
	mov %rsp, %rdi
	cld
	call interrupt_dispatch
	pop %r15
	pop %r14
	pop %r13
	pop %r12
	pop %r11
	pop %r10
	pop %r9
	pop %r8
	pop %rbp
	pop %rdi
	pop %rsi
	pop %rdx
	pop %rcx
	pop %rbx
	pop %rax
	add $16, %rsp
	iretq

/* long run_user_asm(fn %rdi, arg %rsi, rflags %rdx, user_rsp %rcx):
 * saves the callee-saved registers and the kernel stack pointer, then
 * iretq's to user_trampoline in ring 3. user_return_asm comes back here. */
	.globl run_user_asm
run_user_asm:
	push %rbx
	push %rbp
	push %r12
	push %r13
	push %r14
	push %r15
	mov %rsp, saved_kernel_rsp(%rip)
	push $(USER_DATA | 3)
	push %rcx
	push %rdx
	push $(USER_CODE64 | 3)
	lea user_trampoline(%rip), %rax
	push %rax
	mov %rdi, %rax
	mov %rsi, %rdi
	iretq

user_trampoline:       /* ring 3: return fn(arg) through user_exit */
	call *%rax
	mov %rax, %rdi
	call user_exit
	ud2

/* void user_return_asm(long value): ring 0, from the int 0x80 gate. */
	.globl user_return_asm
user_return_asm:
	mov saved_kernel_rsp(%rip), %rsp
	mov %rdi, %rax
	pop %r15
	pop %r14
	pop %r13
	pop %r12
	pop %rbp
	pop %rbx
	ret

/* ---- the SMP trampoline, copied below 1 MiB by smp code ----
 * An AP starts at CS = vector << 8, IP = 0 in real mode. */
	.section .rodata
	.code16
	.globl ap_trampoline, ap_trampoline_end
ap_trampoline:
	cli
	cld
	mov %cs, %ax
	mov %ax, %ds
	lgdtl (ap_tramp_gdt_desc - ap_trampoline)
	mov %cr0, %eax
	or $1, %eax
	mov %eax, %cr0
	ljmpl $CODE32, $ap_entry32
	.balign 8
ap_tramp_gdt_desc:
	.word gdt_end - gdt - 1
	.long gdt
ap_trampoline_end:
	.code64

/* ---- GDT: one for every CPU; the TSS descriptor is filled in by C ---- */
	.section .data
	.balign 16
	.globl gdt, gdt_tss
gdt:
	.quad 0
	.quad 0x00cf9a000000ffff   /* 0x08 code32, ring 0 */
	.quad 0x00cf92000000ffff   /* 0x10 data, ring 0 */
	.quad 0x00af9a000000ffff   /* 0x18 code64, ring 0 */
	.quad 0x00cff2000000ffff   /* 0x20 data, ring 3 */
	.quad 0x00affa000000ffff   /* 0x28 code64, ring 3 */
gdt_tss:
	.quad 0                    /* 0x30 TSS (16 bytes) */
	.quad 0
gdt_end:
	.balign 8
gdt_desc:
	.word gdt_end - gdt - 1
	.long gdt
	.long 0

	.section .noinit, "aw", @nobits
	.balign 4096
	.globl pml4, pdpt, pd_high_pool
pml4:	.skip 4096
pdpt:	.skip 4096
pd_low:	.skip 4 * 4096
pd_high_pool:
	.skip (MAX_MAPPED_GIB - 4) * 4096
	.balign 16
	.skip 16384
boot_stack_top:
	.globl ap_boot_stack
ap_boot_stack:             /* 256 bytes: enough for one call in 32-bit */
	.skip 256

	.section .bss
	.balign 8
saved_kernel_rsp:
	.quad 0
	.globl ap_stack_top
ap_stack_top:
	.quad 0

	.section .note.GNU-stack, "", @progbits
