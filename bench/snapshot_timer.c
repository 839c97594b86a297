// snapshot_timer: the timings bench/snapshot needs where only busybox is at
// hand (the nested-KVM guest of tools/nested-kvm). One line per call.
//
//   snapshot_timer kindling-restore CMD...   launch -> kindling's "restore_us"
//       stat line on stderr (the VM is built and its vCPUs start next);
//       prints `ready_us N restore_us M`, then kills CMD
//   snapshot_timer qemu-restore QMP CMD...   launch -> QMP query-status says
//       "running" (CMD is QEMU with -incoming and -qmp unix:QMP);
//       prints `ready_us N`, then kills CMD
//   snapshot_timer qemu-save QMP FILE        migrate to "exec:cat > FILE" on a
//       running QEMU; prints `save_us N` once query-migrate says completed
//   snapshot_timer qemu-cmd QMP JSON         one QMP command (e.g. cont)
//   snapshot_timer qemu-migrate QMP URI      migrate a running QEMU to URI (a
//       QEMU started with -incoming URI); once query-migrate says completed
//       prints QEMU's own `total_ms N downtime_ms M` (bench/migration)
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long long now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

static pid_t spawn(char** argv, int* err_fd) {
  int p[2];
  if (pipe(p)) exit(1);
  pid_t pid = fork();
  if (pid == 0) {
    dup2(p[1], 2);
    int null = open("/dev/null", O_WRONLY);
    dup2(null, 1);
    close(p[0]);
    execvp(argv[0], argv);
    _exit(127);
  }
  close(p[1]);
  *err_fd = p[0];
  return pid;
}

// Connects to a QMP socket (retrying while it appears), negotiates.
static FILE* qmp_open(const char* path, long long deadline) {
  for (;;) {
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    strncpy(a.sun_path, path, sizeof(a.sun_path) - 1);
    if (connect(fd, (struct sockaddr*)&a, sizeof(a)) == 0) {
      FILE* f = fdopen(fd, "r+");
      char line[4096];
      if (!fgets(line, sizeof line, f)) return NULL;  // greeting
      fputs("{\"execute\":\"qmp_capabilities\"}\n", f);
      fflush(f);
      if (!fgets(line, sizeof line, f)) return NULL;
      return f;
    }
    close(fd);
    if (now_us() > deadline) return NULL;
    usleep(200);
  }
}

// Sends `cmd` and returns 1 when its reply contains `want` (events skipped).
static int qmp_ask(FILE* f, const char* cmd, const char* want) {
  char line[8192];
  fprintf(f, "%s\n", cmd);
  fflush(f);
  while (fgets(line, sizeof line, f)) {
    if (strstr(line, "\"event\"")) continue;
    return strstr(line, want) != NULL;
  }
  return -1;
}

int main(int argc, char** argv) {
  if (argc < 3) return 2;
  long long start = now_us(), deadline = start + 120 * 1000000LL;
  if (!strcmp(argv[1], "kindling-restore")) {
    int err;
    pid_t pid = spawn(argv + 2, &err);
    FILE* f = fdopen(err, "r");
    char line[4096];
    while (fgets(line, sizeof line, f)) {
      const char* s = strstr(line, "kindling: stat restore_us ");
      if (s) {
        printf("ready_us %lld restore_us %s", now_us() - start, s + 26);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        return 0;
      }
      fputs(line, stderr);
    }
    waitpid(pid, NULL, 0);
    return 1;
  }
  if (!strcmp(argv[1], "qemu-restore") && argc > 3) {
    int err;
    pid_t pid = spawn(argv + 3, &err);
    FILE* q = qmp_open(argv[2], deadline);
    int r = 1;
    while (q && now_us() < deadline) {
      int running = qmp_ask(q, "{\"execute\":\"query-status\"}", "\"running\"");
      if (running < 0) break;
      if (running) {
        printf("ready_us %lld\n", now_us() - start);
        r = 0;
        break;
      }
      usleep(200);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return r;
  }
  if (!strcmp(argv[1], "qemu-cmd") && argc > 3) {
    FILE* q = qmp_open(argv[2], deadline);
    return q && qmp_ask(q, argv[3], "\"return\"") == 1 ? 0 : 1;
  }
  if (!strcmp(argv[1], "qemu-migrate") && argc > 3) {
    FILE* q = qmp_open(argv[2], deadline);
    if (!q) return 1;
    char cmd[1024], line[8192];
    snprintf(cmd, sizeof cmd, "{\"execute\":\"migrate\",\"arguments\":{\"uri\":\"%s\"}}",
             argv[3]);
    if (qmp_ask(q, cmd, "\"return\"") != 1) return 1;
    while (now_us() < deadline) {
      fputs("{\"execute\":\"query-migrate\"}\n", q);
      fflush(q);
      do {
        if (!fgets(line, sizeof line, q)) return 1;
      } while (strstr(line, "\"event\""));
      if (strstr(line, "\"failed\"")) return 1;
      const char* total = strstr(line, "\"total-time\":");
      const char* down = strstr(line, "\"downtime\":");
      if (strstr(line, "\"completed\"") && total && down) {
        printf("total_ms %ld downtime_ms %ld\n", atol(total + 13), atol(down + 11));
        return 0;
      }
      usleep(1000);
    }
    return 1;
  }
  if (!strcmp(argv[1], "qemu-save") && argc > 3) {
    FILE* q = qmp_open(argv[2], deadline);
    if (!q) return 1;
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "{\"execute\":\"migrate\",\"arguments\":{\"uri\":\"exec:cat > %s\"}}", argv[3]);
    start = now_us();
    if (qmp_ask(q, cmd, "\"return\"") != 1) return 1;
    while (now_us() < deadline) {
      int done = qmp_ask(q, "{\"execute\":\"query-migrate\"}", "\"completed\"");
      if (done < 0) return 1;
      if (done) {
        printf("save_us %lld\n", now_us() - start);
        return 0;
      }
      usleep(200);
    }
    return 1;
  }
  return 2;
}
