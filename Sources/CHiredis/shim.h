#ifndef SWITCHYARD_CHIREDIS_H
#define SWITCHYARD_CHIREDIS_H
#include <hiredis/hiredis.h>
#endif
