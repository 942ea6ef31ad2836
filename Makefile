# SPDX-License-Identifier: Apache-2.0
# pcbmerge — build, test, demo, fuzz, bench, install.
# `make demo` and `make test` install missing Debian packages themselves (tools/build/install-deps.sh).

BUILD    ?= build
PREFIX   ?= /usr/local
CC       ?= cc
PKGS     := liburing libzstd libxxhash jansson yajl gsl yaml-0.1
VERSION  := $(shell sed -n 's/^\#define PCBM_VERSION_STRING "\(.*\)"/\1/p' include/pcbmerge.h)

# Deterministic floating point: no contraction into FMA, no fast-math, baseline x86-64 code;
# vector paths are chosen at run time and give the same bits.
WARN     := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wno-unused-parameter
ifeq ($(CI),true)
WARN     += -Werror
endif
OPT      ?= -O2 -g
CFLAGS_ALL = -std=c11 -D_GNU_SOURCE $(OPT) $(WARN) -fPIC -fvisibility=hidden -ffp-contract=off \
             -fno-fast-math -pthread -Iinclude $(shell pkg-config --cflags $(PKGS) 2>/dev/null) \
             $(EXTRA_CFLAGS) $(CFLAGS)
LIBS     := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lm -pthread $(EXTRA_LDFLAGS)

LIB_SRC  := $(sort $(wildcard src/common/*.c src/format/*.c src/io/*.c src/sched/*.c \
                               src/stats/*.c src/kernels/*.c src/merge/*.c src/writer/*.c \
                               src/search/*.c))
CLI_SRC  := $(sort $(wildcard src/cli/*.c))
TOOL_SRC := $(sort $(wildcard tools/*/*.c))
TEST_SRC := $(sort $(wildcard tests/unit/test_*.c))

LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
CLI_OBJ  := $(CLI_SRC:%.c=$(BUILD)/obj/%.o)
STATIC   := $(BUILD)/libpcbmerge.a
SHARED   := $(BUILD)/libpcbmerge.so.$(VERSION)
BIN      := $(BUILD)/pcbmerge
TOOLS    := $(addprefix $(BUILD)/tools/,$(notdir $(TOOL_SRC:.c=)))
TESTS    := $(TEST_SRC:tests/unit/%.c=$(BUILD)/tests/%)

.PHONY: all build-all deps test-deps demo test asan fuzz bench install clean
# `all` installs the packages first, then builds in a second make whose flags (pkg-config) are
# computed after the install: a plain `make` or `make -j` works on a fresh machine.
all: deps
	@$(MAKE) --no-print-directory build-all
build-all: $(BIN) $(TOOLS)

deps:
	@tools/build/install-deps.sh build
test-deps:
	@tools/build/install-deps.sh test

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -MMD -MP -c $< -o $@

$(STATIC): $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(SHARED): $(LIB_OBJ)
	$(CC) -shared -Wl,-soname,libpcbmerge.so.0 -o $@ $^ $(LIBS)

$(BIN): $(CLI_OBJ) $(STATIC)
	$(CC) $(CFLAGS_ALL) -o $@ $(CLI_OBJ) $(STATIC) $(LIBS)

# Programs under tools/ (worked example, benchmark, test helpers) build flat into $(BUILD)/tools.
vpath %.c $(sort $(dir $(TOOL_SRC)))
$(BUILD)/tools/%: %.c $(STATIC)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -Isrc -o $@ $< $(STATIC) $(LIBS)

$(BUILD)/tests/%: tests/unit/%.c $(STATIC)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -Isrc -o $@ $< $(STATIC) $(LIBS) $$(pkg-config --cflags --libs cmocka)

# The whole suite: unit tests (cmocka), integration scripts, the NumPy reference comparisons.
test: test-deps
	@$(MAKE) --no-print-directory build-all $(TESTS)
	@BUILD=$(BUILD) tests/run.sh

demo: deps
	@$(MAKE) --no-print-directory build-all
	@BUILD=$(BUILD) tools/example/demo.sh

# AddressSanitizer + UndefinedBehaviorSanitizer build of everything, then the suite.
asan: test-deps
	@$(MAKE) --no-print-directory BUILD=build-asan OPT="-O1 -g -fno-omit-frame-pointer" \
	    EXTRA_CFLAGS="-fsanitize=address,undefined -fno-sanitize-recover=all" \
	    EXTRA_LDFLAGS="-fsanitize=address,undefined" build-all \
	    $(TEST_SRC:tests/unit/%.c=build-asan/tests/%)
	@BUILD=build-asan ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 tests/run.sh

FUZZ_SECONDS ?= 60
fuzz:
	@tools/build/install-deps.sh fuzz
	@FUZZ_SECONDS=$(FUZZ_SECONDS) tests/fuzz/run.sh

bench:
	@tools/build/install-deps.sh bench
	@$(MAKE) --no-print-directory build-all
	@BUILD=$(BUILD) tools/bench/bench.sh
	@BUILD=$(BUILD) tools/bench/bench-split.sh

install: deps
	@$(MAKE) --no-print-directory build-all $(SHARED)
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 755 $(BIN) $(DESTDIR)$(PREFIX)/bin/pcbmerge
	install -m 644 include/pcbmerge.h $(DESTDIR)$(PREFIX)/include/pcbmerge.h
	install -m 644 $(STATIC) $(DESTDIR)$(PREFIX)/lib/libpcbmerge.a
	install -m 755 $(SHARED) $(DESTDIR)$(PREFIX)/lib/
	ln -sf libpcbmerge.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/libpcbmerge.so.0
	ln -sf libpcbmerge.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/libpcbmerge.so
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@VERSION@|$(VERSION)|g' tools/build/pcbmerge.pc.in \
	    > $(DESTDIR)$(PREFIX)/lib/pkgconfig/pcbmerge.pc

clean:
	rm -rf build build-asan build-fuzz

-include $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d)
