"""The policy lab (issue #13): a synthetic city year (`population`) and the fund impact of a draft
policy set (`simulate`), computed with the engine that settles claims."""
