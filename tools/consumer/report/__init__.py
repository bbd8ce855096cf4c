"""`paydbox report TRIP -o FILE`: one trip as an offline HTML page, a PNG, GPX 1.1 or GeoJSON.

  cli.py        the subcommand: load the trip from the consumer database, write the file its name asks for
  trip.py       what every output shows of a trip: speed bins, event styles, labels, stats, titles, times
  draw.py       the drawing: `Canvas` primitives (inline SVG and Pillow PNG), the route map, the speed
                profile, the whole page as one drawing (PNG)
  html_page.py  the HTML writer (inline SVG, no JavaScript, no network)
  gpx.py        the GPX 1.1 writer;  geojson.py  the GeoJSON FeatureCollection
"""
