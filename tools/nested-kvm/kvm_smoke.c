// kvm_smoke: a tiny end-to-end check of /dev/kvm, meant to run inside the
// nested-KVM harness (tools/nested-kvm/run.sh) but usable on any KVM host.
//
//   kvm_smoke            run every check, print results, exit 0 if all pass
//   kvm_smoke --caps     also list every KVM_CAP_* the kernel reports
//
// Checks:
//   1. real mode: `mov $0x3f8,%dx; mov $'A',%al; out %al,(%dx); hlt`
//      -> KVM_EXIT_IO (port 0x3f8, 'A') then KVM_EXIT_HLT
//   2. per-exit cost: N x `out` in real mode, wall time / N
//   3. guest instruction rate: `dec %ecx; jnz` loop, 2 insns per iteration
//   4. long mode set up by the VMM (CR0.PG, CR4.PAE, EFER.LME|LMA, 64-bit
//      CS): `movabs $imm64,%rax; out; hlt` -> RAX checked
//   5. long mode entered by the guest itself from real mode
//   6. KVM_GET_STATS_FD (binary stats) on the vCPU: exits, io_exits, ...
//   7. KVM_GET_SUPPORTED_CPUID leaf 0x40000001 (PV features, PV_EOI bit 6)
//   8. KVM_CREATE_IRQCHIP and KVM_CAP_SPLIT_IRQCHIP
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include "kvm_caps.h"  // generated: static const struct {int n; const char *s;} kCaps[]

// ---- guest code -----------------------------------------------------------
__asm__(
    ".pushsection .rodata\n"
    // 1. real mode hello
    ".globl rm_hello, rm_hello_end\n"
    ".code16\n"
    "rm_hello:\n"
    "  mov $0x3f8, %dx\n"
    "  mov $'A', %al\n"
    "  out %al, (%dx)\n"
    "  hlt\n"
    "rm_hello_end:\n"
    // 2. exit loop: ECX = count (set by VMM)
    ".globl rm_outloop, rm_outloop_end\n"
    "rm_outloop:\n"
    "  mov $0x3f8, %dx\n"
    "1: out %al, (%dx)\n"
    "  dec %ecx\n"
    "  jnz 1b\n"
    "  hlt\n"
    "rm_outloop_end:\n"
    // 3. compute loop: ECX = count
    ".globl rm_spin, rm_spin_end\n"
    "rm_spin:\n"
    "1: dec %ecx\n"
    "  jnz 1b\n"
    "  hlt\n"
    "rm_spin_end:\n"
    // 4. 64-bit code (VMM sets up long mode)
    ".globl lm_code, lm_code_end\n"
    ".code64\n"
    "lm_code:\n"
    "  mov $0x3f8, %dx\n"
    "  mov $'L', %al\n"
    "  out %al, (%dx)\n"
    "  movabs $0x1122334455667788, %rax\n"
    "  hlt\n"
    "lm_code_end:\n"
    // 64-bit exit loop: RCX = count
    ".globl lm_outloop, lm_outloop_end\n"
    "lm_outloop:\n"
    "  mov $0x3f8, %dx\n"
    "1: out %al, (%dx)\n"
    "  dec %rcx\n"
    "  jnz 1b\n"
    "  hlt\n"
    "lm_outloop_end:\n"
    // 64-bit compute loop with a load and a store per iteration: RCX = count
    ".globl lm_spin, lm_spin_end\n"
    "lm_spin:\n"
    "  mov $0x10000, %rsi\n"
    "1: add (%rsi), %rax\n"
    "  mov %rax, 8(%rsi)\n"
    "  dec %rcx\n"
    "  jnz 1b\n"
    "  hlt\n"
    "lm_spin_end:\n"
    // 5. guest enters long mode itself. Loaded at 0x1000, CS=0, real mode.
    //    Page tables (identity, 2M page) at 0x2000/0x3000/0x4000 are built
    //    by the VMM; GDT at 0x500 also by the VMM.
    ".globl rm_to_lm, rm_to_lm_end\n"
    ".code16\n"
    "rm_to_lm:\n"
    "  cli\n"
    "  lgdtl 0x500 + 0x30\n"     // GDT pointer stored at 0x530 by VMM
    "  mov %cr4, %eax\n"
    "  or $0x20, %eax\n"          // PAE
    "  mov %eax, %cr4\n"
    "  mov $0x2000, %eax\n"
    "  mov %eax, %cr3\n"
    "  mov $0xc0000080, %ecx\n"   // EFER
    "  rdmsr\n"
    "  or $0x100, %eax\n"         // LME
    "  wrmsr\n"
    "  mov %cr0, %eax\n"
    "  or $0x80000001, %eax\n"    // PG|PE
    "  mov %eax, %cr0\n"
    "  ljmpl $0x08, $(0x1000 + (2f - rm_to_lm))\n"
    ".code64\n"
    "2:\n"
    "  mov $0x10, %ax\n"
    "  mov %ax, %ds\n"
    "  mov %ax, %ss\n"
    "  mov $0x3f8, %dx\n"
    "  mov $'M', %al\n"
    "  out %al, (%dx)\n"
    "  movabs $0x8877665544332211, %rax\n"
    "  hlt\n"
    "rm_to_lm_end:\n"
    ".popsection\n");
extern const uint8_t rm_hello[], rm_hello_end[], rm_outloop[], rm_outloop_end[],
    rm_spin[], rm_spin_end[], lm_code[], lm_code_end[], lm_outloop[], lm_outloop_end[],
    lm_spin[], lm_spin_end[], rm_to_lm[], rm_to_lm_end[];

// ---- helpers --------------------------------------------------------------
static int failures;
#define CHECK(cond, ...)                                   \
  do {                                                     \
    if (cond) {                                            \
      printf("  ok   ");                                   \
    } else {                                               \
      printf("  FAIL ");                                   \
      failures++;                                          \
    }                                                      \
    printf(__VA_ARGS__);                                   \
    printf("\n");                                          \
  } while (0)

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int kvm_fd;
static long run_size;
static struct kvm_cpuid2 *supported_cpuid;

struct vm {
  int fd, vcpu;
  uint8_t *mem;
  struct kvm_run *run;
};

#define MEM_SIZE (2u << 20)

static int vm_open(struct vm *v) {
  v->fd = ioctl(kvm_fd, KVM_CREATE_VM, 0);
  if (v->fd < 0) { perror("KVM_CREATE_VM"); return -1; }
  v->mem = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  struct kvm_userspace_memory_region r = {
      .slot = 0, .guest_phys_addr = 0, .memory_size = MEM_SIZE, .userspace_addr = (uintptr_t)v->mem};
  if (ioctl(v->fd, KVM_SET_USER_MEMORY_REGION, &r) < 0) { perror("KVM_SET_USER_MEMORY_REGION"); return -1; }
  v->vcpu = ioctl(v->fd, KVM_CREATE_VCPU, 0);
  if (v->vcpu < 0) { perror("KVM_CREATE_VCPU"); return -1; }
  // Without KVM_SET_CPUID2 the guest has no CPUID.LM, and KVM refuses a
  // guest WRMSR that sets EFER.LME (#GP); give it everything KVM supports.
  if (supported_cpuid && ioctl(v->vcpu, KVM_SET_CPUID2, supported_cpuid) < 0) {
    perror("KVM_SET_CPUID2");
    return -1;
  }
  v->run = mmap(NULL, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, v->vcpu, 0);
  if (v->run == MAP_FAILED) { perror("mmap kvm_run"); return -1; }
  return 0;
}

static void vm_close(struct vm *v) {
  munmap(v->run, run_size);
  close(v->vcpu);
  munmap(v->mem, MEM_SIZE);
  close(v->fd);
}

// Real mode, CS base 0, RIP 0x1000, ECX = ecx.
static int vm_real_mode(struct vm *v, const uint8_t *code, size_t len, uint32_t ecx) {
  memcpy(v->mem + 0x1000, code, len);
  struct kvm_sregs s;
  if (ioctl(v->vcpu, KVM_GET_SREGS, &s) < 0) { perror("KVM_GET_SREGS"); return -1; }
  s.cs.base = 0;
  s.cs.selector = 0;
  if (ioctl(v->vcpu, KVM_SET_SREGS, &s) < 0) { perror("KVM_SET_SREGS"); return -1; }
  struct kvm_regs r = {.rip = 0x1000, .rflags = 2, .rcx = ecx};
  if (ioctl(v->vcpu, KVM_SET_REGS, &r) < 0) { perror("KVM_SET_REGS"); return -1; }
  return 0;
}

static const char *exit_name(uint32_t r) {
  switch (r) {
    case KVM_EXIT_IO: return "IO";
    case KVM_EXIT_HLT: return "HLT";
    case KVM_EXIT_MMIO: return "MMIO";
    case KVM_EXIT_SHUTDOWN: return "SHUTDOWN";
    case KVM_EXIT_FAIL_ENTRY: return "FAIL_ENTRY";
    case KVM_EXIT_INTERNAL_ERROR: return "INTERNAL_ERROR";
    case 0xffff: return "(KVM_RUN failed)";
    default: return "?";
  }
}

static void on_alarm(int sig) { (void)sig; }

static void dump_state(struct vm *v) {
  struct kvm_regs r;
  struct kvm_sregs s;
  ioctl(v->vcpu, KVM_GET_REGS, &r);
  ioctl(v->vcpu, KVM_GET_SREGS, &s);
  printf("    state: rip=0x%llx rax=0x%llx rflags=0x%llx cr0=0x%llx cr3=0x%llx cr4=0x%llx efer=0x%llx "
         "cs.sel=0x%x cs.base=0x%llx cs.l=%d cs.db=%d\n",
         (unsigned long long)r.rip, (unsigned long long)r.rax, (unsigned long long)r.rflags,
         (unsigned long long)s.cr0, (unsigned long long)s.cr3, (unsigned long long)s.cr4,
         (unsigned long long)s.efer, s.cs.selector, (unsigned long long)s.cs.base, s.cs.l, s.cs.db);
}

// Every KVM_RUN is bounded by a 10 s alarm so a broken guest cannot hang us.
static int vcpu_run(struct vm *v) {
  alarm(10);
  int rc = ioctl(v->vcpu, KVM_RUN, 0);
  alarm(0);
  if (rc < 0) {
    printf("    KVM_RUN: %s%s\n", strerror(errno), errno == EINTR ? " (guest still running after 10 s)" : "");
    dump_state(v);
    v->run->exit_reason = 0xffff;
    return -1;
  }
  if (v->run->exit_reason == KVM_EXIT_FAIL_ENTRY)
    printf("    fail_entry hw reason 0x%llx\n",
           (unsigned long long)v->run->fail_entry.hardware_entry_failure_reason);
  if (v->run->exit_reason == KVM_EXIT_INTERNAL_ERROR)
    printf("    internal error suberror %u\n", v->run->internal.suberror);
  return 0;
}

static char io_byte(struct vm *v) {
  return *((char *)v->run + v->run->io.data_offset);
}

// Identity-map the first 2 MiB with one large page; GDT at 0x500.
static void build_long_mode_tables(struct vm *v) {
  uint64_t *pml4 = (uint64_t *)(v->mem + 0x2000);
  uint64_t *pdpt = (uint64_t *)(v->mem + 0x3000);
  uint64_t *pd = (uint64_t *)(v->mem + 0x4000);
  pml4[0] = 0x3000 | 3;
  pdpt[0] = 0x4000 | 3;
  pd[0] = 0 | 0x83;  // present, rw, 2M page
  uint64_t *gdt = (uint64_t *)(v->mem + 0x500);
  gdt[0] = 0;
  gdt[1] = 0x00af9b000000ffffull;  // 0x08: 64-bit code, DPL0
  gdt[2] = 0x00cf93000000ffffull;  // 0x10: data
  // GDT pointer at 0x530: limit, base
  uint16_t *lim = (uint16_t *)(v->mem + 0x530);
  *lim = 3 * 8 - 1;
  uint32_t *base = (uint32_t *)(v->mem + 0x532);
  *base = 0x500;
}

// ---- checks ---------------------------------------------------------------
static void check_real_mode(void) {
  printf("[1] real-mode OUT + HLT\n");
  struct vm v;
  double t0 = now();
  if (vm_open(&v) < 0) { failures++; return; }
  double t1 = now();
  vm_real_mode(&v, rm_hello, rm_hello_end - rm_hello, 0);
  vcpu_run(&v);
  int io_ok = v.run->exit_reason == KVM_EXIT_IO && v.run->io.direction == KVM_EXIT_IO_OUT &&
              v.run->io.port == 0x3f8 && io_byte(&v) == 'A';
  CHECK(io_ok, "first exit %s port 0x%x byte '%c'", exit_name(v.run->exit_reason),
        v.run->io.port, io_ok ? io_byte(&v) : '?');
  vcpu_run(&v);
  CHECK(v.run->exit_reason == KVM_EXIT_HLT, "second exit %s", exit_name(v.run->exit_reason));
  double t2 = now();
  vm_close(&v);
  double t3 = now();
  printf("    create VM+memslot+vCPU %.3f ms, two runs %.3f ms, teardown %.3f ms\n",
         (t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3);
}

static void check_exit_cost(void) {
  printf("[2] per-exit cost (real-mode OUT loop)\n");
  struct vm v;
  if (vm_open(&v) < 0) { failures++; return; }
  const uint32_t n = 2000;
  vm_real_mode(&v, rm_outloop, rm_outloop_end - rm_outloop, n);
  uint32_t outs = 0;
  double t0 = now();
  for (;;) {
    if (vcpu_run(&v) < 0) break;
    if (v.run->exit_reason == KVM_EXIT_IO) { outs++; continue; }
    break;
  }
  double t1 = now();
  CHECK(outs == n && v.run->exit_reason == KVM_EXIT_HLT, "%u IO exits then %s", outs,
        exit_name(v.run->exit_reason));
  printf("    %.1f us per exit (KVM_RUN round trip incl. L2 entry)\n", (t1 - t0) * 1e6 / (outs ? outs : 1));
  vm_close(&v);
}

static void check_insn_rate(void) {
  printf("[3] guest instruction rate (dec/jnz loop)\n");
  uint32_t n = 100000;
  for (int round = 0; round < 6; round++) {
    struct vm v;
    if (vm_open(&v) < 0) { failures++; return; }
    vm_real_mode(&v, rm_spin, rm_spin_end - rm_spin, n);
    double t0 = now();
    int exits = 0;
    do {
      if (vcpu_run(&v) < 0) break;
      exits++;
    } while (v.run->exit_reason != KVM_EXIT_HLT && exits < 1000000 &&
             (v.run->exit_reason == KVM_EXIT_IRQ_WINDOW_OPEN || v.run->exit_reason == KVM_EXIT_INTR));
    double dt = now() - t0;
    int ok = v.run->exit_reason == KVM_EXIT_HLT;
    vm_close(&v);
    if (!ok) { CHECK(0, "spin loop ended with %s", exit_name(v.run->exit_reason)); return; }
    if (dt > 1.0 || round == 5) {
      CHECK(1, "%u iterations in %.3f s: %.1f M guest insns/s", n, dt, 2.0 * n / dt / 1e6);
      return;
    }
    n *= 4;
  }
}

// 64-bit mode straight from the VMM: CS.L, paging, EFER.LME|LMA; RIP 0x1000.
static int vm_long_mode(struct vm *v, const uint8_t *text, size_t len, uint64_t rcx) {
  build_long_mode_tables(v);
  memcpy(v->mem + 0x1000, text, len);
  struct kvm_sregs s;
  ioctl(v->vcpu, KVM_GET_SREGS, &s);
  struct kvm_segment code = {.base = 0, .limit = 0xffffffff, .selector = 8, .type = 11, .present = 1,
                             .dpl = 0, .db = 0, .s = 1, .l = 1, .g = 1};
  struct kvm_segment data = {.base = 0, .limit = 0xffffffff, .selector = 16, .type = 3, .present = 1,
                             .dpl = 0, .db = 1, .s = 1, .l = 0, .g = 1};
  s.cs = code;
  s.ds = s.es = s.fs = s.gs = s.ss = data;
  s.gdt.base = 0x500;
  s.gdt.limit = 23;
  s.cr3 = 0x2000;
  s.cr4 = 0x20;                 // PAE
  s.cr0 = 0x80000011 | 0x20;    // PG | ET | PE | NE
  s.efer = 0x500;               // LME | LMA
  if (ioctl(v->vcpu, KVM_SET_SREGS, &s) < 0) { CHECK(0, "KVM_SET_SREGS long mode: %s", strerror(errno)); return -1; }
  struct kvm_regs r = {.rip = 0x1000, .rflags = 2, .rsp = 0x8000, .rcx = rcx};
  return ioctl(v->vcpu, KVM_SET_REGS, &r);
}

static void check_long_mode_vmm(void) {
  printf("[4] 64-bit guest, long mode set up by the VMM\n");
  struct vm v;
  if (vm_open(&v) < 0) { failures++; return; }
  if (vm_long_mode(&v, lm_code, lm_code_end - lm_code, 0) < 0) { vm_close(&v); return; }
  struct kvm_regs r;
  struct kvm_sregs s;
  vcpu_run(&v);
  int io_ok = v.run->exit_reason == KVM_EXIT_IO && io_byte(&v) == 'L';
  CHECK(io_ok, "first exit %s byte '%c'", exit_name(v.run->exit_reason), io_ok ? 'L' : '?');
  vcpu_run(&v);
  ioctl(v.vcpu, KVM_GET_REGS, &r);
  CHECK(v.run->exit_reason == KVM_EXIT_HLT && r.rax == 0x1122334455667788ull,
        "second exit %s, rax=0x%llx (64-bit immediate)", exit_name(v.run->exit_reason),
        (unsigned long long)r.rax);
  ioctl(v.vcpu, KVM_GET_SREGS, &s);
  CHECK((s.efer & 0x400) && s.cs.l, "EFER=0x%llx CS.L=%d", (unsigned long long)s.efer, s.cs.l);
  vm_close(&v);

  if (vm_open(&v) < 0) { failures++; return; }
  const uint32_t n = 2000;
  vm_long_mode(&v, lm_outloop, lm_outloop_end - lm_outloop, n);
  uint32_t outs = 0;
  double t0 = now();
  while (vcpu_run(&v) == 0 && v.run->exit_reason == KVM_EXIT_IO) outs++;
  double t1 = now();
  CHECK(outs == n && v.run->exit_reason == KVM_EXIT_HLT, "64-bit: %u IO exits then %s, %.1f us per exit",
        outs, exit_name(v.run->exit_reason), (t1 - t0) * 1e6 / (outs ? outs : 1));
  vm_close(&v);

  uint64_t iters = 100000;
  for (int round = 0; round < 6; round++) {
    if (vm_open(&v) < 0) { failures++; return; }
    vm_long_mode(&v, lm_spin, lm_spin_end - lm_spin, iters);
    t0 = now();
    vcpu_run(&v);
    double dt = now() - t0;
    int ok = v.run->exit_reason == KVM_EXIT_HLT;
    vm_close(&v);
    if (!ok) { CHECK(0, "64-bit spin loop ended with %s", exit_name(v.run->exit_reason)); return; }
    if (dt > 1.0 || round == 5) {
      CHECK(1, "64-bit ring-0 load/store loop: %llu iterations in %.3f s: %.1f M guest insns/s",
            (unsigned long long)iters, dt, 4.0 * iters / dt / 1e6);
      return;
    }
    iters *= 4;
  }
}

static void check_long_mode_guest(void) {
  printf("[5] guest enters long mode itself from real mode\n");
  struct vm v;
  if (vm_open(&v) < 0) { failures++; return; }
  build_long_mode_tables(&v);
  vm_real_mode(&v, rm_to_lm, rm_to_lm_end - rm_to_lm, 0);
  vcpu_run(&v);
  int io_ok = v.run->exit_reason == KVM_EXIT_IO && io_byte(&v) == 'M';
  CHECK(io_ok, "first exit %s port 0x%x byte 0x%02x", exit_name(v.run->exit_reason), v.run->io.port,
        v.run->exit_reason == KVM_EXIT_IO ? (uint8_t)io_byte(&v) : 0);
  if (!io_ok) dump_state(&v);
  vcpu_run(&v);
  struct kvm_regs r;
  ioctl(v.vcpu, KVM_GET_REGS, &r);
  struct kvm_sregs s;
  ioctl(v.vcpu, KVM_GET_SREGS, &s);
  CHECK(v.run->exit_reason == KVM_EXIT_HLT && r.rax == 0x8877665544332211ull && (s.efer & 0x400) && s.cs.l,
        "second exit %s, rax=0x%llx, EFER=0x%llx CS.L=%d", exit_name(v.run->exit_reason),
        (unsigned long long)r.rax, (unsigned long long)s.efer, s.cs.l);
  vm_close(&v);
}

static void check_stats_fd(void) {
  printf("[6] binary stats (KVM_GET_STATS_FD)\n");
  int cap = ioctl(kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_BINARY_STATS_FD);
  CHECK(cap > 0, "KVM_CAP_BINARY_STATS_FD = %d", cap);
  if (cap <= 0) return;
  struct vm v;
  if (vm_open(&v) < 0) { failures++; return; }
  vm_real_mode(&v, rm_outloop, rm_outloop_end - rm_outloop, 10);
  do vcpu_run(&v); while (v.run->exit_reason == KVM_EXIT_IO);
  int sfd = ioctl(v.vcpu, KVM_GET_STATS_FD, 0);
  CHECK(sfd >= 0, "vCPU KVM_GET_STATS_FD -> %d%s%s", sfd, sfd < 0 ? " " : "", sfd < 0 ? strerror(errno) : "");
  if (sfd >= 0) {
    struct kvm_stats_header h;
    pread(sfd, &h, sizeof h, 0);
    size_t dsz = sizeof(struct kvm_stats_desc) + h.name_size;
    char *descs = calloc(h.num_desc, dsz);
    pread(sfd, descs, h.num_desc * dsz, h.desc_offset);
    printf("    %u vCPU stats:", h.num_desc);
    for (uint32_t i = 0; i < h.num_desc; i++) {
      struct kvm_stats_desc *d = (void *)(descs + i * dsz);
      const char *want[] = {"exits", "io_exits", "mmio_exits", "halt_exits", "irq_exits",
                            "irq_injections", "insn_emulation", "nmi_injections", NULL};
      for (int k = 0; want[k]; k++)
        if (!strcmp(d->name, want[k])) {
          uint64_t val;
          pread(sfd, &val, 8, h.data_offset + d->offset);
          printf(" %s=%llu", d->name, (unsigned long long)val);
        }
    }
    printf("\n");
    free(descs);
    close(sfd);
  }
  int vfd = ioctl(v.fd, KVM_GET_STATS_FD, 0);
  CHECK(vfd >= 0, "VM KVM_GET_STATS_FD -> %d", vfd);
  if (vfd >= 0) close(vfd);
  vm_close(&v);
}

static void check_cpuid(void) {
  printf("[7] KVM_GET_SUPPORTED_CPUID\n");
  int n = 256;
  struct kvm_cpuid2 *c = calloc(1, sizeof *c + n * sizeof(struct kvm_cpuid_entry2));
  c->nent = n;
  if (ioctl(kvm_fd, KVM_GET_SUPPORTED_CPUID, c) < 0) { CHECK(0, "KVM_GET_SUPPORTED_CPUID: %s", strerror(errno)); return; }
  int found = 0;
  for (uint32_t i = 0; i < c->nent; i++) {
    struct kvm_cpuid_entry2 *e = &c->entries[i];
    if (e->function == 0x40000000) {
      char sig[13] = {0};
      memcpy(sig, &e->ebx, 4); memcpy(sig + 4, &e->ecx, 4); memcpy(sig + 8, &e->edx, 4);
      printf("    0x40000000: eax=0x%x sig '%s'\n", e->eax, sig);
    }
    if (e->function == 0x40000001) {
      found = 1;
      printf("    0x40000001: eax=0x%x (clocksource2 b3=%d async_pf b4=%d steal b5=%d PV_EOI b6=%d "
             "pv_unhalt b7=%d pv_tlb b9=%d pv_ipi b11=%d)\n",
             e->eax, !!(e->eax & 8), !!(e->eax & 16), !!(e->eax & 32), !!(e->eax & 64),
             !!(e->eax & 128), !!(e->eax & 512), !!(e->eax & 2048));
      CHECK(e->eax & 64, "PV_EOI (0x40000001 EAX bit 6) offered");
    }
    if (e->function == 1)
      printf("    leaf 1: ecx=0x%08x edx=0x%08x (x2apic=%d hypervisor=%d)\n", e->ecx, e->edx,
             !!(e->ecx & (1u << 21)), !!(e->ecx & (1u << 31)));
    if (e->function == 0x80000001)
      printf("    leaf 0x80000001: ecx=0x%08x (svm=%d)\n", e->ecx, !!(e->ecx & 4));
  }
  if (!found) CHECK(0, "leaf 0x40000001 missing");
  printf("    %u entries\n", c->nent);
  free(c);
}

static void check_irqchip(void) {
  printf("[8] irqchip\n");
  int fd = ioctl(kvm_fd, KVM_CREATE_VM, 0);
  int rc = ioctl(fd, KVM_CREATE_IRQCHIP, 0);
  CHECK(rc == 0, "KVM_CREATE_IRQCHIP %s", rc == 0 ? "ok" : strerror(errno));
  int pit = ioctl(fd, KVM_CREATE_PIT2, &(struct kvm_pit_config){0});
  CHECK(pit == 0, "KVM_CREATE_PIT2 %s", pit == 0 ? "ok" : strerror(errno));
  double t0 = now();
  close(fd);
  printf("    teardown with full irqchip: %.3f ms (close only; freed lazily)\n", (now() - t0) * 1e3);
  fd = ioctl(kvm_fd, KVM_CREATE_VM, 0);
  struct kvm_enable_cap cap = {.cap = KVM_CAP_SPLIT_IRQCHIP, .args = {24}};
  rc = ioctl(fd, KVM_ENABLE_CAP, &cap);
  CHECK(rc == 0, "KVM_CAP_SPLIT_IRQCHIP %s", rc == 0 ? "ok" : strerror(errno));
  close(fd);
}

int main(int argc, char **argv) {
  int list_caps = argc > 1 && !strcmp(argv[1], "--caps");
  setvbuf(stdout, NULL, _IOLBF, 0);
  struct sigaction sa = {.sa_handler = on_alarm};
  sigaction(SIGALRM, &sa, NULL);
  kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (kvm_fd < 0) { printf("FAIL open /dev/kvm: %s\n", strerror(errno)); return 2; }
  int api = ioctl(kvm_fd, KVM_GET_API_VERSION, 0);
  printf("KVM API version %d\n", api);
  run_size = ioctl(kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
  supported_cpuid = calloc(1, sizeof *supported_cpuid + 256 * sizeof(struct kvm_cpuid_entry2));
  supported_cpuid->nent = 256;
  if (ioctl(kvm_fd, KVM_GET_SUPPORTED_CPUID, supported_cpuid) < 0) {
    printf("FAIL KVM_GET_SUPPORTED_CPUID: %s\n", strerror(errno));
    return 2;
  }
  if (list_caps) {
    printf("capabilities (nonzero KVM_CHECK_EXTENSION):\n");
    for (size_t i = 0; i < sizeof kCaps / sizeof kCaps[0]; i++) {
      int r = ioctl(kvm_fd, KVM_CHECK_EXTENSION, kCaps[i].n);
      if (r > 0) printf("  %s=%d\n", kCaps[i].s, r);
    }
    printf("absent:");
    for (size_t i = 0; i < sizeof kCaps / sizeof kCaps[0]; i++)
      if (ioctl(kvm_fd, KVM_CHECK_EXTENSION, kCaps[i].n) <= 0) printf(" %s", kCaps[i].s + 8);
    printf("\n");
  }
  double t0 = now();
  check_real_mode();
  check_exit_cost();
  check_insn_rate();
  check_long_mode_vmm();
  check_long_mode_guest();
  check_stats_fd();
  check_cpuid();
  check_irqchip();
  printf("kvm_smoke: %s (%d failure%s, %.2f s)\n", failures ? "FAILED" : "all passed", failures,
         failures == 1 ? "" : "s", now() - t0);
  return failures ? 1 : 0;
}
