# Thin wrapper over CMake: `make` builds, `make test` installs what is missing and runs every test
# in a normal and a sanitizer build.
JOBS ?= 2
BUILD ?= build
ASAN_BUILD ?= build-asan

.PHONY: all deps test test-fast asan clean bench demo

all: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release >/dev/null
	cmake --build $(BUILD) -j $(JOBS)

deps:
	@scripts/install-deps.sh build

asan: deps
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DMTL_SANITIZE=ON >/dev/null
	cmake --build $(ASAN_BUILD) -j $(JOBS)

test: all asan
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)
	cd $(ASAN_BUILD) && ctest --output-on-failure -j $(JOBS)

test-fast: all
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

demo:
	scripts/demo.sh $(DEMO_ITERS)

bench: all
	@scripts/install-deps.sh bench
	bench/multilenet.sh

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
