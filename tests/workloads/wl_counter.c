/*
 * wl_counter - the simplest workload: one process, one counter in memory.
 *
 * Invariants: the counter and a twin kept in another variable stay in step
 * (twin == 3 * counter), and every progress line is the counter itself.
 * Used by the demo and the smoke scenarios (leave-running, bad-images).
 */
#include "wl.h"

static volatile uint64_t counter;
static volatile uint64_t twin;

int main(int argc, char **argv)
{
	wl_init(argc, argv, 0);
	wl_log("ready");
	for (;;) {
		counter = counter + 1;
		twin = twin + 3;
		if (twin != 3 * counter)
			wl_fail("twin %llu != 3 * counter %llu", (unsigned long long)twin,
				(unsigned long long)counter);
		wl_progress();
		if (wl_progress_n != counter)
			wl_fail("progress %llu != counter %llu", (unsigned long long)wl_progress_n,
				(unsigned long long)counter);
		wl_sleep_ms(100);
	}
}
