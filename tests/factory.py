"""Builds chained events for a site the way an agent does (see events.samples.SampleSite)."""

from events.samples import SampleSite as SiteWriter

__all__ = ["SiteWriter"]
