"""The trip as a GeoJSON FeatureCollection: the route (LineString, times and speeds) and the events."""
from tools.consumer import db as consumer_db
from tools.consumer.report.trip import event_detail, event_label, iso_time, speed_kmh


def geojson(t, pos, events):
    feats = [{
        "type": "Feature",
        "geometry": {"type": "LineString",
                     "coordinates": [[round(p["lon_e7"] / 1e7, 7), round(p["lat_e7"] / 1e7, 7)]
                                     for p in pos]},
        "properties": {"trip_id": t["id"], "device": t["device"], "boot": t["boot"], "trip": t["trip"],
                       "start": consumer_db.utc_iso(t.get("start_utc_s")),
                       "end": consumer_db.utc_iso(t.get("end_utc_s")),
                       "distance_m": t.get("distance_m"), "duration_s": t.get("duration_s"),
                       "towed_m": t.get("towed_m", 0), "km_incomplete": t.get("km_incomplete", False),
                       "km_incomplete_reasons": t.get("km_incomplete_reasons", {}),
                       "score": t.get("score"), "times": [iso_time(t, p["t_ms"], p["utc_s"]) for p in pos],
                       "speeds_kmh": [round(speed_kmh(p["speed_mmps"]), 1) for p in pos]},
    }]
    for i, e in enumerate(events):
        if e.get("lat_e7") is None:
            continue
        feats.append({"type": "Feature",
                      "geometry": {"type": "Point",
                                   "coordinates": [round(e["lon_e7"] / 1e7, 7), round(e["lat_e7"] / 1e7, 7)]},
                      "properties": {"n": i + 1, "kind": e.get("kind"), "label": event_label(e),
                                     "detail": event_detail(e),
                                     "time": iso_time(t, e.get("t_ms"), e.get("utc_s")),
                                     "peak_mg": e.get("peak_mg")}})
    return {"type": "FeatureCollection", "features": feats}
