# -*- coding: utf-8 -*-
# Coach sentences (en/fr) for a trip's score (firmware/score.py): what the driver should improve,
# most important first. Host side (replay report, trip report); not in the box image: the box sends
# the trip_end record, the sentences are made from it where they are read.
from firmware.score import _WEIGHT, _get, parts

_TEXT = {
    "en": {
        "score": "Score %d/100.",
        "crash": "A possible crash was recorded on this trip. If anyone is hurt, call 112.",
        "brake": "You braked hard %d time(s): look further ahead and keep more distance to the vehicle in "
                 "front.",
        "accel": "You accelerated hard %d time(s): press the accelerator more gently when pulling away.",
        "corner": "You took %d bend(s) too fast: slow down before the bend, not in it.",
        "speed": "You were over the speed limit for %d min (%d%% of the trip): keep an eye on the signs.",
        "night": "%d%% of this trip was at night: take breaks and keep extra margin, visibility is lower.",
        "good": "Smooth, calm driving: no harsh events on this trip. Well done!",
        "ok": "Good trip overall: keep anticipating to avoid sudden braking.",
        "short": "Short trip: not much to judge, drive safely.",
        "partial": "Partial score: %d event(s) could not be classified (the box is still learning how it is "
                   "mounted).",
        "gnss": "%d harsh acceleration/braking event(s) were measured from GPS speed only.",
    },
    "fr": {
        "score": "Note %d/100.",
        "crash": "Un possible accident a été enregistré pendant ce trajet. En cas de blessé, appelez le 112.",
        "brake": "Vous avez freiné brusquement %d fois : regardez plus loin devant et gardez plus de "
                 "distance avec le véhicule qui précède.",
        "accel": "Vous avez accéléré brusquement %d fois : appuyez plus doucement sur l'accélérateur au "
                 "démarrage.",
        "corner": "Vous avez pris %d virage(s) trop vite : ralentissez avant le virage, pas pendant.",
        "speed": "Vous avez dépassé la limite de vitesse pendant %d min (%d%% du trajet) : surveillez les "
                 "panneaux.",
        "night": "%d%% de ce trajet s'est fait de nuit : faites des pauses et gardez plus de marge, la "
                 "visibilité est réduite.",
        "good": "Conduite souple et calme : aucun événement brusque sur ce trajet. Bravo !",
        "ok": "Bon trajet dans l'ensemble : continuez à anticiper pour eviter les freinages brusques.",
        "short": "Trajet court : peu d'éléments a juger, bonne route.",
        "partial": "Note partielle : %d événement(s) n'ont pas pu être classés (le boîtier apprend encore sa "
                   "position de montage).",
        "gnss": "%d accélération(s)/freinage(s) brusque(s) mesuré(s) par la vitesse GPS seule.",
    },
}


def coach(summary, lang="en"):
    """A few plain sentences (list of str) telling the driver what to improve, most important first."""
    if lang not in _TEXT:
        raise ValueError("lang: expected 'en' or 'fr', got %r" % (lang,))
    T = _TEXT[lang]
    p = parts(summary)
    out = [T["score"] % p["score"]]
    n_crash = _get(summary, "n_crash")
    nb = _get(summary, "n_harsh_brake")
    na = _get(summary, "n_harsh_accel")
    nc = _get(summary, "n_harsh_corner_left") + _get(summary, "n_harsh_corner_right")
    if n_crash:
        out.append(T["crash"])
    nu = _get(summary, "n_unclassified")
    if nu:
        out.append(T["partial"] % nu)
    # the most frequent problem first
    w = _WEIGHT
    items = [(nb * w["harsh_brake"], "brake", nb), (na * w["harsh_accel"], "accel", na),
             (nc * w["harsh_corner_left"], "corner", nc)]
    items.sort(key=lambda it: -it[0])
    for w, key, n in items:
        if n > 0:
            out.append(T[key] % n)
    ng = _get(summary, "n_gnss_only")
    if ng:
        out.append(T["gnss"] % ng)
    dur = _get(summary, "duration_s")
    os_s = _get(summary, "overspeed_s")
    if os_s >= 30 and dur > 0:
        out.append(T["speed"] % ((os_s + 30) // 60, 100 * os_s // dur))
    ns = _get(summary, "night_s")
    if dur > 0 and ns * 100 // dur >= 30:
        out.append(T["night"] % (100 * (ns if ns < dur else dur) // dur))
    if len(out) == 1:
        if _get(summary, "distance_m") < 200:
            out.append(T["short"])
        elif p["score"] >= 90:
            out.append(T["good"])
        else:
            out.append(T["ok"])
    return out
