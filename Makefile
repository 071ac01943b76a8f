# Shortcuts for scripts/dev.sh, which does the work (and the set-up) for each of these.
.PHONY: run test lint bench-data
run:
	./scripts/dev.sh run
test:
	./scripts/dev.sh test
lint:
	./scripts/dev.sh lint
bench-data:
	./scripts/dev.sh bench data_load
