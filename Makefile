# Entry points. Each installs what it needs when it is missing (scripts/deps.sh).
.PHONY: bench bench-quick demo test

RUNS ?= 3

# framerec side by side with its peers on the same frames: one table, also in
# target/bench-report.md (`make bench RUNS=5` for more runs of each case).
bench:
	bash scripts/deps.sh bench
	python3 bench/run.py --no-deps --runs $(RUNS)

# The same with 30 frames and one run: checks that every case still works.
bench-quick:
	bash scripts/deps.sh bench
	python3 bench/run.py --no-deps --quick

demo:
	bash scripts/demo.sh

test:
	bash scripts/test.sh
