// boot_timer: runs a command N times and prints, per run, the time to its
// first byte on stdout, the time to its exit, its peak RSS and its status:
//   run <i> first_us <t> exit_us <t> maxrss_kib <k> status <s>
// It also copies the command's stderr lines that start with "kindling: mem"
// (kindling --stats). Used by bench/boot where Python is not available (the
// nested-KVM guest of tools/nested-kvm has only busybox).
// Usage: boot_timer N COMMAND ARGS...
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long long now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

int main(int argc, char** argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: boot_timer N COMMAND ARGS...\n");
    return 2;
  }
  int runs = atoi(argv[1]);
  for (int i = 0; i < runs; i++) {
    int out[2], err[2];
    if (pipe(out) || pipe(err)) return 1;
    long long start = now_us();
    pid_t pid = fork();
    if (pid == 0) {
      int devnull = open("/dev/null", O_RDONLY);
      dup2(devnull, 0);
      dup2(out[1], 1);
      dup2(err[1], 2);
      close(out[0]);
      close(err[0]);
      execvp(argv[2], argv + 2);
      _exit(127);
    }
    close(out[1]);
    close(err[1]);
    char buf[4096];
    long long first = -1;
    ssize_t n;
    while ((n = read(out[0], buf, sizeof buf)) > 0) {
      if (first < 0) first = now_us() - start;
    }
    char ebuf[65536];
    size_t elen = 0;
    while (elen < sizeof ebuf - 1 &&
           (n = read(err[0], ebuf + elen, sizeof ebuf - 1 - elen)) > 0) {
      elen += n;
    }
    ebuf[elen] = 0;
    int status;
    struct rusage ru;
    wait4(pid, &status, 0, &ru);
    long long end = now_us() - start;
    close(out[0]);
    close(err[0]);
    printf("run %d first_us %lld exit_us %lld maxrss_kib %ld status %d\n", i,
           first, end, ru.ru_maxrss,
           WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
    for (char* line = strtok(ebuf, "\n"); line; line = strtok(NULL, "\n")) {
      if (strncmp(line, "kindling: mem", 13) == 0) printf("run %d %s\n", i, line);
    }
    fflush(stdout);
  }
  return 0;
}
