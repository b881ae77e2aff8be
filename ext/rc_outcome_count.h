/* GENERATED FROM src/rewardcore/outcomes.py BY tools/gen_cython_constants.py, DO NOT MODIFY. */
/* The number of outcome codes, for C (the shared segment's outcome counters). */
#ifndef RC_OUTCOME_COUNT_H
#define RC_OUTCOME_COUNT_H

#define RC_N_OUTCOMES 18

#endif
