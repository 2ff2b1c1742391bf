/*
 * plant.h - the simulated plant of PROTOCOL.md section 5 (mode 1).
 *
 * A damped second-order system driven by actuator 0, with a slow sinusoidal
 * disturbance of its rest position:
 *
 *   u = clamp(actuator0, -1000, 1000) / 1000
 *   a = gain*u - 2*zeta*omega*v - omega^2*(p - disturbance(t))
 *   v += a*dt;  p += v*dt                      (semi-implicit Euler)
 *   disturbance(t) = 0.3 * sin(2*pi*0.2*t)
 *
 * omega = 2*pi*0.5 rad/s, zeta = 0.3, gain = omega^2: a unit command settles
 * at p = 1 (plus the disturbance).  Plain C and float, so it also runs on a
 * host for checking.
 */
#ifndef RTRL_PLANT_H
#define RTRL_PLANT_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    float p;    /* position */
    float v;    /* velocity */
    float u;    /* command as last applied, -1..1 */
    float t;    /* plant time in seconds, kept modulo the disturbance period */
} plant_t;

/* At rest at p = 0, t = 0. */
void plant_reset(plant_t *plant);

/*
 * Advances the plant by dt seconds under the command actuator0 (raw,
 * clamped to -1000..1000).  Long steps are split into substeps of at most
 * max_step seconds, which keeps the integration stable for any period.
 */
void plant_advance(plant_t *plant, int16_t actuator0, float dt, float max_step);

#ifdef __cplusplus
}
#endif

#endif /* RTRL_PLANT_H */
