// Freestanding string functions and a small vsnprintf for the test guests.
#include "runtime.h"

void* memset(void* d, int c, size_t n) {
  unsigned char* p = d;
  while (n--) *p++ = (unsigned char)c;
  return d;
}

void* memcpy(void* d, const void* s, size_t n) {
  unsigned char* p = d;
  const unsigned char* q = s;
  while (n--) *p++ = *q++;
  return d;
}

int memcmp(const void* a, const void* b, size_t n) {
  const unsigned char *p = a, *q = b;
  for (; n; n--, p++, q++)
    if (*p != *q) return *p < *q ? -1 : 1;
  return 0;
}

size_t strlen(const char* s) {
  size_t n = 0;
  while (s[n]) n++;
  return n;
}

struct out {
  char* buf;
  size_t size, len;
};

static void put(struct out* o, char c) {
  if (o->len + 1 < o->size) o->buf[o->len] = c;
  o->len++;
}

static void put_num(struct out* o, uint64_t v, unsigned base, int neg,
                    int width, char pad, int alt) {
  char tmp[24];
  int n = 0;
  do {
    tmp[n++] = "0123456789abcdef"[v % base];
    v /= base;
  } while (v);
  int len = n + neg + (alt ? 2 : 0);
  if (pad == ' ')
    for (; width > len; width--) put(o, ' ');
  if (neg) put(o, '-');
  if (alt) {
    put(o, '0');
    put(o, 'x');
  }
  if (pad == '0')
    for (; width > len; width--) put(o, '0');
  while (n) put(o, tmp[--n]);
}

int vsnprintf(char* buf, size_t size, const char* fmt, va_list ap) {
  struct out o = {buf, size, 0};
  for (; *fmt; fmt++) {
    if (*fmt != '%') {
      put(&o, *fmt);
      continue;
    }
    fmt++;
    int alt = 0, width = 0, lng = 0;
    char pad = ' ';
    if (*fmt == '#') alt = 1, fmt++;
    if (*fmt == '0') pad = '0', fmt++;
    while (*fmt >= '0' && *fmt <= '9') width = width * 10 + (*fmt++ - '0');
    while (*fmt == 'l') lng++, fmt++;
    switch (*fmt) {
      case 'd': {
        int64_t v = lng ? va_arg(ap, long) : va_arg(ap, int);
        uint64_t u = v < 0 ? -(uint64_t)v : (uint64_t)v;
        put_num(&o, u, 10, v < 0, width, pad, 0);
        break;
      }
      case 'u':
        put_num(&o, lng ? va_arg(ap, unsigned long) : va_arg(ap, unsigned),
                10, 0, width, pad, 0);
        break;
      case 'x':
        put_num(&o, lng ? va_arg(ap, unsigned long) : va_arg(ap, unsigned),
                16, 0, width, pad, alt);
        break;
      case 'p':
        put_num(&o, (uint64_t)va_arg(ap, void*), 16, 0, width, pad, 1);
        break;
      case 's': {
        const char* s = va_arg(ap, const char*);
        if (!s) s = "(null)";
        size_t n = strlen(s);
        for (; width > (int)n; width--) put(&o, ' ');
        while (*s) put(&o, *s++);
        break;
      }
      case 'c':
        put(&o, (char)va_arg(ap, int));
        break;
      case '%':
        put(&o, '%');
        break;
      case '\0':
        fmt--;
        break;
      default:
        put(&o, '%');
        put(&o, *fmt);
    }
  }
  if (size) buf[o.len < size ? o.len : size - 1] = '\0';
  return (int)o.len;
}

int snprintf(char* buf, size_t size, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, size, fmt, ap);
  va_end(ap);
  return n;
}
