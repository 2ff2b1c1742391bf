/*
 * plant.c - integration of the simulated plant (see plant.h).
 */
#include <math.h>
#include "plant.h"

#define PLANT_PI        3.14159265f
#define PLANT_OMEGA     (2.0f * PLANT_PI * 0.5f)        /* rad/s */
#define PLANT_ZETA      0.3f
#define PLANT_GAIN      (PLANT_OMEGA * PLANT_OMEGA)     /* unit command -> p = 1 */
#define DIST_AMPLITUDE  0.3f
#define DIST_FREQ_HZ    0.2f
#define DIST_PERIOD_S   (1.0f / DIST_FREQ_HZ)           /* 5 s */

void plant_reset(plant_t *plant)
{
    plant->p = 0.0f;
    plant->v = 0.0f;
    plant->u = 0.0f;
    plant->t = 0.0f;
}

static void plant_step(plant_t *plant, float dt)
{
    float d = DIST_AMPLITUDE * sinf(2.0f * PLANT_PI * DIST_FREQ_HZ * plant->t);
    float a = PLANT_GAIN * plant->u
            - 2.0f * PLANT_ZETA * PLANT_OMEGA * plant->v
            - PLANT_OMEGA * PLANT_OMEGA * (plant->p - d);
    plant->v += a * dt;
    plant->p += plant->v * dt;
    plant->t += dt;
    /* the disturbance is periodic: keeping t small keeps float precision */
    while (plant->t >= DIST_PERIOD_S)
        plant->t -= DIST_PERIOD_S;
}

void plant_advance(plant_t *plant, int16_t actuator0, float dt, float max_step)
{
    int16_t c = actuator0;
    uint16_t n;
    float steps, h;

    if (c > 1000)
        c = 1000;
    else if (c < -1000)
        c = -1000;
    plant->u = (float)c / 1000.0f;

    if (dt <= 0.0f)
        return;
    steps = ceilf(dt / max_step);
    if (steps < 1.0f)
        steps = 1.0f;
    else if (steps > 65535.0f)
        steps = 65535.0f;               /* only for absurd stalls */
    n = (uint16_t)steps;
    h = dt / (float)n;
    while (n--)
        plant_step(plant, h);
}
